"""Tests for the Kubernetes protobuf body decoder.

Bodies are built with a tiny test-only wire encoder in the exact shape kubectl 1.32 sends
(every non-pointer field present even when empty, zero-length creationTimestamp, empty
envelope contentEncoding/contentType), and real kubectl bodies captured from a logging
server live in `fixtures/`.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from imageregistry.apiserver.protobuf import ProtobufDecodeError, decode_k8s_protobuf

FIXTURES = Path(__file__).parent / "fixtures"
RBAC = "rbac.authorization.k8s.io"


# --- test-only encoder -------------------------------------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values use ten-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def vi(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def ld(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def s(number: int, text: str) -> bytes:
    return ld(number, text.encode())


def msg(number: int, *parts: bytes) -> bytes:
    return ld(number, b"".join(parts))


def entry(number: int, key: str, value: bytes) -> bytes:
    return msg(number, s(1, key), value)


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = msg(1, s(1, api_version), s(2, kind))
    return b"k8s\x00" + type_meta + ld(2, raw) + s(3, "") + s(4, "")


def object_meta(name: str = "", namespace: str = "", *extra: bytes) -> bytes:
    """ObjectMeta as kubectl writes it: all non-pointer fields, empty ones included."""
    return msg(
        1,
        s(1, name),
        s(2, ""),
        s(3, namespace),
        s(4, ""),
        s(5, ""),
        s(6, ""),
        vi(7, 0),
        msg(8),
        *extra,
    )


def subject(kind: str, api_group: str, name: str, namespace: str = "") -> bytes:
    return msg(2, s(1, kind), s(2, api_group), s(3, name), s(4, namespace))


def sar_status() -> bytes:
    return msg(3, vi(1, 0), s(2, ""), s(3, ""), vi(4, 0))


# --- decoding kubectl-shaped bodies ---------------------------------------------------------


def test_rolebinding_with_user_serviceaccount_and_group_subjects() -> None:
    raw = (
        object_meta("rb1", "team-a")
        + subject("User", RBAC, "alice")
        + subject("ServiceAccount", "", "builder", "app")
        + subject("Group", RBAC, "devs")
        + msg(3, s(1, RBAC), s(2, "ClusterRole"), s(3, "system:image-puller"))
    )
    decoded = decode_k8s_protobuf(envelope(f"{RBAC}/v1", "RoleBinding", raw))
    assert decoded == {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "rb1", "namespace": "team-a"},
        "subjects": [
            {"kind": "User", "apiGroup": RBAC, "name": "alice"},
            {"kind": "ServiceAccount", "name": "builder", "namespace": "app"},
            {"kind": "Group", "apiGroup": RBAC, "name": "devs"},
        ],
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "system:image-puller"},
    }


def test_clusterrolebinding_uses_the_rolebinding_shape() -> None:
    raw = object_meta("crb") + msg(3, s(1, RBAC), s(2, "ClusterRole"), s(3, "admin"))
    decoded = decode_k8s_protobuf(envelope(f"{RBAC}/v1", "ClusterRoleBinding", raw))
    assert decoded["kind"] == "ClusterRoleBinding"
    assert decoded["roleRef"] == {"apiGroup": RBAC, "kind": "ClusterRole", "name": "admin"}


def test_clusterrole_rules_keep_the_empty_core_api_group() -> None:
    rule = msg(2, s(1, "get"), s(1, "list"), s(2, ""), s(3, "namespaces"), s(4, "team-a"))
    url_rule = msg(2, s(1, "get"), s(5, "/version"))
    selector = entry(1, "rbac.example/aggregate", s(2, "true"))
    expression = msg(2, s(1, "tier"), s(2, "In"), s(3, "a"), s(3, "b"))
    raw = object_meta("reader") + rule + url_rule + msg(3, msg(1, selector + expression))
    decoded = decode_k8s_protobuf(envelope(f"{RBAC}/v1", "ClusterRole", raw))
    assert decoded["rules"] == [
        {
            "verbs": ["get", "list"],
            "apiGroups": [""],
            "resources": ["namespaces"],
            "resourceNames": ["team-a"],
        },
        {"verbs": ["get"], "nonResourceURLs": ["/version"]},
    ]
    assert decoded["aggregationRule"] == {
        "clusterRoleSelectors": [
            {
                "matchLabels": {"rbac.example/aggregate": "true"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
            }
        ]
    }


def test_role_is_supported() -> None:
    raw = object_meta("r", "team-a") + msg(2, s(1, "get"), s(2, "image.alauda.io"))
    decoded = decode_k8s_protobuf(envelope(f"{RBAC}/v1", "Role", raw))
    assert decoded["rules"] == [{"verbs": ["get"], "apiGroups": ["image.alauda.io"]}]


def test_labels_annotations_and_other_metadata() -> None:
    meta = object_meta(
        "team-x",
        "",
        msg(9, vi(1, 1767323045)),
        vi(10, 30),
        entry(11, "env", s(2, "prod")),
        entry(11, "empty", s(2, "")),
        entry(12, "note", s(2, "hi")),
        msg(13, s(1, "Namespace"), s(3, "owner"), s(4, "u1"), s(5, "v1"), vi(6, 1)),
        s(14, "kubernetes"),
    )
    decoded = decode_k8s_protobuf(envelope("v1", "Namespace", meta))
    assert decoded["metadata"] == {
        "name": "team-x",
        "deletionTimestamp": "2026-01-02T03:04:05Z",
        "deletionGracePeriodSeconds": 30,
        "labels": {"env": "prod", "empty": ""},
        "annotations": {"note": "hi"},
        "ownerReferences": [
            {
                "kind": "Namespace",
                "name": "owner",
                "uid": "u1",
                "apiVersion": "v1",
                "controller": True,
            }
        ],
        "finalizers": ["kubernetes"],
    }


def test_creation_timestamp_renders_as_rfc3339() -> None:
    meta = msg(1, s(1, "n"), msg(8, vi(1, 1767323045), vi(2, 123)))
    decoded = decode_k8s_protobuf(envelope("v1", "ServiceAccount", meta))
    assert decoded["metadata"] == {"name": "n", "creationTimestamp": "2026-01-02T03:04:05Z"}


def test_namespace_with_empty_spec_and_status_phase() -> None:
    raw = object_meta("team-x") + msg(2) + msg(3, s(1, ""))
    decoded = decode_k8s_protobuf(envelope("v1", "Namespace", raw))
    assert decoded == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-x"}}


def test_ssar_with_resource_attributes() -> None:
    attributes = msg(
        1,
        s(1, "team-a"),
        s(2, "get"),
        s(3, "image.alauda.io"),
        s(4, ""),
        s(5, "imagestreams"),
        s(6, "layers"),
        s(7, "demo"),
    )
    raw = object_meta() + msg(2, attributes) + sar_status()
    decoded = decode_k8s_protobuf(
        envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", raw)
    )
    assert decoded == {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "namespace": "team-a",
                "verb": "get",
                "group": "image.alauda.io",
                "resource": "imagestreams",
                "subresource": "layers",
                "name": "demo",
            }
        },
    }


def test_subject_access_review_extra_becomes_lists() -> None:
    spec = msg(
        2,
        msg(2, s(1, "/healthz"), s(2, "get")),
        s(3, "bob"),
        s(4, "devs"),
        entry(5, "scopes", msg(2, s(1, "a"), s(1, "b"))),
        s(6, "uid-1"),
    )
    raw = object_meta(namespace="team-a") + spec + sar_status()
    decoded = decode_k8s_protobuf(
        envelope("authorization.k8s.io/v1", "LocalSubjectAccessReview", raw)
    )
    assert decoded["metadata"] == {"namespace": "team-a"}
    assert decoded["spec"] == {
        "nonResourceAttributes": {"path": "/healthz", "verb": "get"},
        "user": "bob",
        "groups": ["devs"],
        "extra": {"scopes": ["a", "b"]},
        "uid": "uid-1",
    }


def test_ssrr_keeps_only_the_namespace() -> None:
    raw = object_meta() + msg(2, s(1, "team-a")) + msg(3, vi(3, 0), s(4, ""))
    decoded = decode_k8s_protobuf(
        envelope("authorization.k8s.io/v1", "SelfSubjectRulesReview", raw)
    )
    assert decoded == {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": "team-a"},
    }


def test_self_subject_review_with_empty_status() -> None:
    raw = object_meta() + msg(2, msg(1, s(1, ""), s(2, "")))
    decoded = decode_k8s_protobuf(envelope("authentication.k8s.io/v1", "SelfSubjectReview", raw))
    assert decoded == {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}


def test_token_request_with_empty_spec() -> None:
    raw = object_meta() + msg(2) + msg(3, s(1, ""), msg(2))
    decoded = decode_k8s_protobuf(envelope("authentication.k8s.io/v1", "TokenRequest", raw))
    assert decoded == {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}


def test_token_request_with_audiences_bound_object_and_expiry() -> None:
    bound = msg(3, s(1, "Secret"), s(2, "v1"), s(3, "s1"), s(4, "u-1"))
    raw = object_meta() + msg(2, s(1, "a1"), s(1, "a2"), bound, vi(4, 600))
    decoded = decode_k8s_protobuf(envelope("authentication.k8s.io/v1", "TokenRequest", raw))
    assert decoded["spec"] == {
        "audiences": ["a1", "a2"],
        "boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s1", "uid": "u-1"},
        "expirationSeconds": 600,
    }


def test_token_review_and_delete_options() -> None:
    review = object_meta() + msg(2, s(1, "tok"), s(2, "aud"))
    decoded = decode_k8s_protobuf(envelope("authentication.k8s.io/v1", "TokenReview", review))
    assert decoded["spec"] == {"token": "tok", "audiences": ["aud"]}
    options = vi(1, 5) + msg(2, s(1, "u1")) + s(4, "Background") + s(5, "All")
    decoded = decode_k8s_protobuf(envelope("meta.k8s.io/v1", "DeleteOptions", options))
    assert decoded == {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 5,
        "preconditions": {"uid": "u1"},
        "propagationPolicy": "Background",
        "dryRun": ["All"],
    }


def test_unknown_fields_are_skipped() -> None:
    raw = object_meta("sa", "ns", s(99, "future"), vi(100, 7)) + vi(50, 1) + s(51, "x")
    decoded = decode_k8s_protobuf(envelope("v1", "ServiceAccount", raw))
    assert decoded["metadata"] == {"name": "sa", "namespace": "ns"}


# --- real kubectl 1.32.4 bodies -------------------------------------------------------------
# Captured by pointing `kubectl --server=http://127.0.0.1:PORT` at a logging http.server that
# answered /version (minor 32), legacy discovery and 201 for every POST.

REAL_BODIES = {
    "rolebinding.pb": {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "rb1", "namespace": "team-a"},
        "subjects": [{"kind": "User", "apiGroup": RBAC, "name": "alice"}],
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "system:image-puller"},
    },
    "rolebinding-mixed.pb": {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "rb2", "namespace": "team-a"},
        "subjects": [
            {"kind": "User", "apiGroup": RBAC, "name": "alice"},
            {"kind": "Group", "apiGroup": RBAC, "name": "devs"},
            {"kind": "ServiceAccount", "name": "builder", "namespace": "app"},
        ],
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "edit"},
    },
    "namespace.pb": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-x"}},
    "clusterrolebinding.pb": {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "crb1"},
        "subjects": [{"kind": "User", "apiGroup": RBAC, "name": "alice"}],
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "reader"},
    },
    # kubectl create clusterrole reader --verb=get,list
    #   --resource=namespaces,imagestreams.image.alauda.io --resource-name=team-a
    "clusterrole.pb": {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "reader"},
        "rules": [
            {
                "verbs": ["get", "list"],
                "apiGroups": [""],
                "resources": ["namespaces"],
                "resourceNames": ["team-a"],
            },
            {
                "verbs": ["get", "list"],
                "apiGroups": ["image.alauda.io"],
                "resources": ["imagestreams"],
                "resourceNames": ["team-a"],
            },
        ],
    },
    "clusterrole-urls.pb": {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "urls"},
        "rules": [{"verbs": ["get"], "nonResourceURLs": ["/version", "/healthz"]}],
    },
    "clusterrole-aggregation.pb": {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "agg"},
        "aggregationRule": {
            "clusterRoleSelectors": [
                {"matchLabels": {"rbac.example.com/aggregate-to-view": "true"}}
            ]
        },
    },
    "role.pb": {
        "apiVersion": f"{RBAC}/v1",
        "kind": "Role",
        "metadata": {"name": "pusher", "namespace": "team-a"},
        "rules": [
            {
                "verbs": ["get", "create"],
                "apiGroups": ["image.alauda.io"],
                "resources": ["imagestreams/layers"],
            }
        ],
    },
    "ssar-subresource.pb": {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "namespace": "team-a",
                "verb": "get",
                "group": "image.alauda.io",
                "resource": "imagestreams",
                "subresource": "layers",
            }
        },
    },
    "serviceaccount.pb": {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "robot", "namespace": "team-x"},
    },
    "tokenrequest.pb": {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"},
    "tokenrequest-full.pb": {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": ["a1", "a2"],
            "boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s1", "uid": "u-1"},
            "expirationSeconds": 600,
        },
    },
    "selfsubjectreview.pb": {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    "selfsubjectrulesreview.pb": {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": "team-a"},
    },
    "ssar-nonresource.pb": {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"nonResourceAttributes": {"path": "/version", "verb": "get"}},
    },
    "ssar-resource.pb": {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "namespace": "team-a",
                "verb": "create",
                "resource": "namespaces",
            }
        },
    },
}


@pytest.mark.parametrize("fixture", sorted(REAL_BODIES))
def test_real_kubectl_bodies(fixture: str) -> None:
    assert decode_k8s_protobuf((FIXTURES / fixture).read_bytes()) == REAL_BODIES[fixture]


# --- malformed input ------------------------------------------------------------------------

VALID = envelope(
    f"{RBAC}/v1",
    "RoleBinding",
    object_meta("rb1", "team-a")
    + subject("User", RBAC, "alice")
    + msg(3, s(1, RBAC), s(2, "ClusterRole"), s(3, "view")),
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "magic"),
        (b"{}", "magic"),
        (b"k8s\x01" + VALID[4:], "magic"),
        (b"k8s\x00\x0a\x80", "malformed"),  # truncated length varint
        (b"k8s\x00\x12\x05ab", "malformed"),  # length beyond the end
        (VALID[:-3], "malformed"),  # truncated envelope
        (envelope("v1", "Pod", b""), "unsupported kind"),
        (envelope("v2", "Namespace", b""), "unsupported kind"),
        (envelope("v1", "Namespace", vi(1, 5)), "wrong wire type"),  # metadata as a varint
        (envelope("v1", "Namespace", msg(1, vi(1, 5))), "wrong wire type"),  # name as a varint
        (b"k8s\x00" + vi(1, 1), "wrong wire type"),  # envelope typeMeta as a varint
        (envelope("v1", "Namespace", msg(1, ld(1, b"\xff\xfe"))), "UTF-8"),
        (envelope("v1", "Namespace", msg(1, msg(8, vi(1, 1 << 62)))), "out of range"),
    ],
)
def test_malformed_bodies_raise_decode_error(body: bytes, message: str) -> None:
    with pytest.raises(ProtobufDecodeError, match=message):
        decode_k8s_protobuf(body)


def test_compressed_content_encoding_is_rejected() -> None:
    body = b"k8s\x00" + msg(1, s(1, "v1"), s(2, "Namespace")) + ld(2, b"") + s(3, "gzip")
    with pytest.raises(ProtobufDecodeError, match="contentEncoding"):
        decode_k8s_protobuf(body)


def test_fuzzed_bodies_only_ever_raise_decode_error() -> None:
    rng = random.Random(1234)
    seeds = [VALID, *((FIXTURES / name).read_bytes() for name in sorted(REAL_BODIES))]
    for _ in range(3000):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(4, len(body))
            action = rng.randrange(3)
            if action == 0:
                body[position] = rng.randrange(256)
            elif action == 1:
                del body[position:]
            else:
                body[position:position] = rng.randbytes(rng.randint(1, 8))
            if len(body) <= 4:
                break
        _decode_or_decode_error(bytes(body))
    for _ in range(500):
        _decode_or_decode_error(b"k8s\x00" + rng.randbytes(rng.randint(0, 64)))
        _decode_or_decode_error(rng.randbytes(rng.randint(0, 64)))


def _decode_or_decode_error(body: bytes) -> None:
    try:
        decoded = decode_k8s_protobuf(body)
    except ProtobufDecodeError:
        return
    assert isinstance(decoded["kind"], str)
