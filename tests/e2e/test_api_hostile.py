"""Hostile and mistaken requests to the Kubernetes-style API answer a 4xx `Status`, never a 500,
never store what they should refuse, and never rename, move or swap an existing object.

Each test pins one bug found by throwing hostile input at a running server (query values,
object metadata of the wrong JSON type, names kube refuses, DeleteOptions preconditions,
U+0000 that PostgreSQL cannot store); the two seeded fuzz tests mutate valid JSON and
protobuf bodies and only require a well-formed 4xx/2xx answer.
"""

from __future__ import annotations

import base64
import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.kubectl_support import add_user_token
from tests.e2e.oci_support import image_manifest, sha
from tests.support.bigbody import MIB, body_headers, memory_mib, stream
from tests.support.server import RegistryProcess

NS = "hx"
IMG = "/apis/image.alauda.io/v1"
IS = f"{IMG}/namespaces/{NS}/imagestreams"
IST = f"{IMG}/namespaces/{NS}/imagestreamtags"
ISM = f"{IMG}/namespaces/{NS}/imagestreammappings"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
SA = f"/api/v1/namespaces/{NS}/serviceaccounts"
PROTOBUF = "application/vnd.kubernetes.protobuf"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
FIXTURES = Path(__file__).parents[1] / "unit" / "apiserver" / "fixtures"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with RegistryProcess(data_dir=tmp_path_factory.mktemp("api-hostile") / "data") as process:
        yield process


@pytest.fixture(scope="module")
def api(server: RegistryProcess) -> Iterator[httpx.Client]:
    with server.client(server.admin_token) as client:
        assert client.post("/api/v1/namespaces", json={"metadata": {"name": NS}}).is_success
        yield client


def _push(api: httpx.Client, repo: str, seed: bytes) -> str:
    """Push a one-layer image as `<repo>:v1` over the OCI API; return its digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed.hex()}).encode()
    layer = seed * 64
    for blob in (config, layer):
        location = api.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
        api.put(location, params={"digest": sha(blob)}, content=blob).raise_for_status()
    manifest = image_manifest(config, [layer])
    put = api.put(
        f"/v2/{repo}/manifests/v1",
        content=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert put.status_code == 201, put.text
    return sha(manifest)


@pytest.fixture(scope="module")
def digest(api: httpx.Client) -> str:
    """One image pushed as `hx/app:v1`."""
    return _push(api, f"{NS}/app", b"hostile layer")


def _status(response: httpx.Response, code: int) -> dict[str, Any]:
    assert response.status_code == code, response.text
    body = response.json()
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["code"] == code
    return dict(body)


def _well_formed(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        body = response.json()
        assert body["kind"] == "Status" and body["code"] == response.status_code


def _names(api: httpx.Client, path: str) -> list[str]:
    return [item["metadata"]["name"] for item in api.get(path).json()["items"]]


# --- query values ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "1.5", "-1", "²"])
def test_watch_timeout_seconds_must_be_an_integer(api: httpx.Client, value: str) -> None:
    response = api.get(IS, params={"watch": "true", "timeoutSeconds": value})
    _status(response, 400)


def test_watch_with_integer_timeout_still_streams(api: httpx.Client) -> None:
    response = api.get(IS, params={"watch": "true", "timeoutSeconds": "1"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("limit", "²"),
        ("resourceVersion", "abc"),
        ("resourceVersion", "²"),
        ("resourceVersion", "99999999999999999999999"),
    ],
)
def test_non_ascii_or_bogus_numbers_are_bad_request(
    api: httpx.Client, param: str, value: str
) -> None:
    _status(api.get(IS, params={param: value}), 400)
    _status(api.get(IS, params={param: value, "watch": "true", "timeoutSeconds": "1"}), 400)


def test_json_patch_index_with_non_ascii_digit_is_bad_request(api: httpx.Client) -> None:
    assert api.post(IS, json={"metadata": {"name": "digits"}}).status_code == 201
    patch = [{"op": "add", "path": "/spec/tags/²", "value": {"name": "x"}}]
    response = api.patch(
        f"{IS}/digits", content=json.dumps(patch), headers={"Content-Type": JSON_PATCH}
    )
    _status(response, 400)


@pytest.mark.parametrize(
    "params",
    [{"labelSelector": "a===b"}, {"fieldSelector": "metadata.name"}],
)
def test_malformed_selectors_are_bad_request(api: httpx.Client, params: dict[str, str]) -> None:
    _status(api.get(SA, params=params), 400)
    _status(api.get(IS, params=params), 400)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000,
        b'{"ns": "hx", "name": "x", "extra": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        b'{"ns": 1, "name": 2}',
        b'{"ns": "\\u0000", "name": "x"}',
    ],
)
def test_tampered_continue_tokens_are_bad_request(api: httpx.Client, raw: bytes) -> None:
    token = base64.urlsafe_b64encode(raw).decode()
    for path in (SA, IS, f"{IMG}/images"):
        _status(api.get(path, params={"continue": token, "limit": "1"}), 400)


def test_empty_generate_name_does_not_invent_a_name(api: httpx.Client) -> None:
    body = _status(api.post(SA, json={"metadata": {"generateName": ""}}), 422)
    assert "name or generateName is required" in body["message"]


# --- object metadata -------------------------------------------------------------------


def _bodies(digest: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (IS, {"kind": "ImageStream", "apiVersion": "image.alauda.io/v1", "metadata": {}}),
        (IST, {"metadata": {}, "tag": {"from": {"kind": "ImageStreamTag", "name": "app:v1"}}}),
        (ISM, {"metadata": {}, "tag": "t", "image": {"metadata": {"name": digest}}}),
        (f"{IMG}/imagesignatures", {"metadata": {}, "type": "atomic", "content": "aGk="}),
        ("/api/v1/namespaces", {"metadata": {}}),
        (SA, {"metadata": {}}),
        (
            f"/apis/authorization.k8s.io/v1/namespaces/{NS}/localsubjectaccessreviews",
            {"metadata": {}, "spec": {"user": "bob", "resourceAttributes": {"verb": "get"}}},
        ),
    ]


@pytest.mark.parametrize("index", range(7))
@pytest.mark.parametrize(
    "meta",
    [
        "a/b",
        [1, 2],
        1.5,
        {"name": {"a": 1}},
        {"name": "ok", "labels": 1.5},
        {"name": "ok", "annotations": {"a": 1}},
    ],
)
def test_metadata_of_the_wrong_type_is_bad_request(
    api: httpx.Client, digest: str, index: int, meta: Any
) -> None:
    path, body = _bodies(digest)[index]
    before = api.get(IS).json()["items"]
    _status(api.post(path, json={**body, "metadata": meta}), 400)
    assert api.get(IS).json()["items"] == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/namespaces", {"metadata": {"name": "abc\n"}}),
        (IS, {"metadata": {"name": "abc\n"}}),
        (SA, {"metadata": {"name": "abc\n"}}),
        (
            IST,
            {
                "metadata": {"name": "app:t\n"},
                "tag": {"from": {"kind": "ImageStreamTag", "name": "app:v1"}},
            },
        ),
    ],
)
def test_names_with_a_trailing_newline_are_invalid(
    api: httpx.Client, digest: str, path: str, body: dict[str, Any]
) -> None:
    _status(api.post(path, json=body), 422)
    assert not any(name.endswith("\n") for name in _names(api, path.replace("tags", "s")))


@pytest.mark.parametrize(
    ("stream", "tag", "image"),
    [
        ("Bad/../x", "t", None),
        ("UPPER", "t", None),
        ("ok", "a:b/c", None),
        ("ok", "../t", None),
        ("ok", "t", "not-a-digest"),
    ],
)
def test_imagestreammapping_validates_its_names(
    api: httpx.Client, digest: str, stream: str, tag: str, image: str | None
) -> None:
    body = {
        "metadata": {"name": stream},
        "tag": tag,
        "image": {"metadata": {"name": image or digest}},
    }
    _status(api.post(ISM, json=body), 422)
    assert stream not in _names(api, IS)


def test_imagestreammapping_still_tags_with_valid_names(api: httpx.Client, digest: str) -> None:
    body = {
        "metadata": {"name": "ok-stream"},
        "tag": "v1.0",
        "image": {"metadata": {"name": digest}},
    }
    assert api.post(ISM, json=body).status_code == 201
    assert api.get(f"{IST}/ok-stream:v1.0").json()["image"]["metadata"]["name"] == digest


def test_imagestreammapping_cannot_copy_an_image_the_caller_cannot_pull(
    server: RegistryProcess, api: httpx.Client, digest: str
) -> None:
    assert api.post("/api/v1/namespaces", json={"metadata": {"name": "vault"}}).is_success
    hidden = _push(api, "vault/app", b"private layer")
    binding = {
        "metadata": {"name": "mallory-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory"}],
    }
    assert api.post(f"{RBAC}/namespaces/{NS}/rolebindings", json=binding).status_code == 201
    with server.client(add_user_token(server, "mallory")) as mallory:

        def mapping(stream: str, image: str) -> httpx.Response:
            body = {
                "metadata": {"name": stream},
                "tag": "v1",
                "image": {"metadata": {"name": image}},
            }
            return mallory.post(ISM, json=body)

        _status(mapping("stolen", hidden), 403)
        assert "stolen" not in _names(api, IS)
        assert mallory.get(f"/v2/{NS}/stolen/manifests/{hidden}").status_code == 404
        # an image the caller can pull (its own namespace's) still maps
        assert mapping("copied", digest).status_code == 201


@pytest.mark.parametrize(
    "labels",
    [{"a/b/c": "x"}, {"a": "x" * 64}, {"bad key!": "v"}, {"a": "-v"}, {"UPPER_/x": "v"}],
)
def test_label_keys_and_values_are_validated(api: httpx.Client, labels: dict[str, str]) -> None:
    _status(api.post(SA, json={"metadata": {"name": "labelled", "labels": labels}}), 422)
    _status(api.post(IS, json={"metadata": {"name": "labelled", "labels": labels}}), 422)
    assert "labelled" not in _names(api, SA) + _names(api, IS)


def test_valid_qualified_labels_are_accepted(api: httpx.Client) -> None:
    labels = {"example.com/tier": "front_end-1.0", "empty": ""}
    created = api.post(SA, json={"metadata": {"name": "ok-labels", "labels": labels}})
    assert created.status_code == 201, created.text
    assert created.json()["metadata"]["labels"] == labels


def test_nul_characters_are_refused(api: httpx.Client) -> None:
    role = {"metadata": {"name": "\u0000"}, "rules": []}
    _status(api.post(f"{RBAC}/namespaces/{NS}/roles", json=role), 400)
    _status(api.post(SA, json={"metadata": {"name": "n", "annotations": {"a": "x\u0000"}}}), 400)
    _status(api.get("/api/v1/namespaces/%00"), 400)
    _status(api.get(SA, params={"fieldSelector": "metadata.name=\u0000"}), 400)
    assert _names(api, f"{RBAC}/namespaces/{NS}/roles") == []


@pytest.mark.parametrize("depth", [200, 600, 5000])
def test_deeply_nested_bodies_are_bad_request(api: httpx.Client, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    raw = f'{{"metadata": {{"name": "deep"}}, "secrets": {nested}}}'.encode()
    headers = {"Content-Type": "application/json"}
    _status(api.post(f"{SA}?fieldValidation=Ignore", content=raw, headers=headers), 400)
    assert "deep" not in _names(api, SA)
    api.post(IS, json={"metadata": {"name": "nested"}})
    patch = '{"spec": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    merge = {"Content-Type": MERGE}
    _status(api.patch(f"{IS}/nested", content=patch.encode(), headers=merge), 400)


@pytest.mark.parametrize(
    "path", [f"{IMG}/imagesignatures", f"{IMG}/namespaces/{NS}/imagestreamimages"]
)
def test_watch_of_an_unwatchable_resource_is_a_status(api: httpx.Client, path: str) -> None:
    _status(api.get(path, params={"watch": "true", "timeoutSeconds": "1"}), 405)


def test_options_answers_a_status(api: httpx.Client) -> None:
    _status(api.request("OPTIONS", SA), 405)
    _status(api.request("OPTIONS", "/api/v1"), 405)


# --- identity of an existing object ----------------------------------------------------


def test_update_and_patch_cannot_rename_move_or_swap(api: httpx.Client) -> None:
    original = api.post(IS, json={"metadata": {"name": "pp"}}).json()
    renamed = {**original, "metadata": {**original["metadata"], "name": "other"}}
    _status(api.put(f"{IS}/pp", json=renamed), 400)
    moved = {**original, "metadata": {**original["metadata"], "namespace": "default"}}
    _status(api.put(f"{IS}/pp", json=moved), 400)
    headers = {"Content-Type": MERGE}
    _status(api.patch(f"{IS}/pp", json={"metadata": {"name": "other"}}, headers=headers), 400)
    _status(api.patch(f"{IS}/pp", json={"metadata": {"uid": "swapped"}}, headers=headers), 409)
    _status(api.patch(f"{IMG}/images/sha256:{'0' * 64}", json={}, headers=headers), 404)
    after = api.get(f"{IS}/pp").json()["metadata"]
    assert after["uid"] == original["metadata"]["uid"]
    assert "other" not in _names(api, IS)


def test_image_patch_cannot_rename_it(api: httpx.Client, digest: str) -> None:
    path = f"{IMG}/images/{digest}"
    patch = {"metadata": {"name": f"sha256:{'0' * 64}"}}
    _status(api.patch(path, json=patch, headers={"Content-Type": MERGE}), 400)
    assert api.get(path).json()["metadata"]["name"] == digest


# --- DeleteOptions ---------------------------------------------------------------------


@pytest.mark.parametrize("options", [b'{"dryRun": 5}', b"[]", b'"str"', b'{"preconditions": 5}'])
def test_malformed_delete_options_are_bad_request(api: httpx.Client, options: bytes) -> None:
    api.post(IS, json={"metadata": {"name": "dd"}})
    response = api.request(
        "DELETE", f"{IS}/dd", content=options, headers={"Content-Type": "application/json"}
    )
    _status(response, 400)
    assert api.get(f"{IS}/dd").status_code == 200


def test_delete_preconditions_are_enforced(api: httpx.Client) -> None:
    created = api.post(SA, json={"metadata": {"name": "guarded"}}).json()["metadata"]

    def delete(preconditions: dict[str, str]) -> httpx.Response:
        return api.request("DELETE", f"{SA}/guarded", json={"preconditions": preconditions})

    _status(delete({"uid": "someone-else"}), 409)
    _status(delete({"resourceVersion": "1"}), 409)
    assert api.get(f"{SA}/guarded").status_code == 200
    matching = {"uid": created["uid"], "resourceVersion": created["resourceVersion"]}
    assert delete(matching).status_code == 200
    _status(api.get(f"{SA}/guarded"), 404)


# --- prune and GC operations -----------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"all": "false"},
        {"pruneRegistry": "false"},
        {"ignoreInvalidRefs": 1},
        {"keepTagRevisions": True},
        {"keepTagRevisions": 1.9},
        {"keepTagRevisions": 2**80},
        {"keepYoungerThan": "9" * 400 + "h"},
        {"keepYoungerThan": 5},
        {"catalogPageSize": -1},
        {"undo": 5},
    ],
)
def test_prune_spec_of_the_wrong_type_is_bad_request(
    api: httpx.Client, spec: dict[str, Any]
) -> None:
    # `"all": "false"` used to read as true and widen the prune
    body = {"apiVersion": "image.alauda.io/v1", "kind": "ImagePrune", "spec": spec}
    _status(api.post(f"{IMG}/imageprunes?dryRun=All", json=body), 400)


def test_registry_gc_spec_of_the_wrong_type_is_bad_request(api: httpx.Client) -> None:
    body = {"apiVersion": "image.alauda.io/v1", "kind": "RegistryGC"}
    _status(
        api.post(f"{IMG}/registrygcs?dryRun=All", json={**body, "spec": {"reconcile": "no"}}), 400
    )
    _status(api.post(f"{IMG}/registrygcs?dryRun=All", json={**body, "spec": {"bogus": 1}}), 400)
    ok = api.post(f"{IMG}/registrygcs?dryRun=All", json={**body, "spec": {"reconcile": False}})
    assert ok.status_code == 201, ok.text


def test_well_typed_prune_spec_still_plans(api: httpx.Client) -> None:
    spec = {"all": False, "keepTagRevisions": 3, "keepYoungerThan": "1h", "whitelist": []}
    body = {"apiVersion": "image.alauda.io/v1", "kind": "ImagePrune", "spec": spec}
    response = api.post(f"{IMG}/imageprunes?dryRun=All", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["status"]["dryRun"] is True


# --- seeded fuzzing --------------------------------------------------------------------

HOSTILE: list[Any] = [
    None,
    0,
    -1,
    2**70,
    1.5e308,
    True,
    "",
    "x" * 300,
    "../..",
    "a/b",
    "UPPER",
    "\n",
    [],
    {},
    [None],
    [[]],
    {"a": {"b": [1]}},
    "é",
]


def _paths(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*path, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _paths(value, (*path, index))


def _mutate(rng: random.Random, body: dict[str, Any]) -> Any:
    out: Any = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(_paths(out)))
        value = copy.deepcopy(rng.choice(HOSTILE))
        if not path:
            out = value
            continue
        node = out
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return out


def test_seeded_json_mutations_never_fail_the_server(api: httpx.Client, digest: str) -> None:
    rng = random.Random(20261128)
    bases: list[tuple[str, dict[str, Any]]] = [
        (
            IS,
            {
                "metadata": {"name": "fz", "labels": {"a": "b"}},
                "spec": {
                    "tags": [
                        {"name": "t", "from": {"kind": "ImageStreamImage", "name": f"app@{digest}"}}
                    ]
                },
            },
        ),
        (
            IST,
            {
                "metadata": {"name": "fz:t"},
                "tag": {"from": {"kind": "ImageStreamTag", "name": "app:v1"}},
            },
        ),
        (ISM, {"metadata": {"name": "fz"}, "tag": "t", "image": {"metadata": {"name": digest}}}),
        (
            f"{RBAC}/namespaces/{NS}/roles",
            {
                "metadata": {"name": "fz"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
            },
        ),
        (
            f"{RBAC}/namespaces/{NS}/rolebindings",
            {
                "metadata": {"name": "fz"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "view",
                },
                "subjects": [{"kind": "User", "name": "u"}],
            },
        ),
        (SA, {"metadata": {"name": "fz"}, "secrets": [{"name": "s"}]}),
        (
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {"spec": {"resourceAttributes": {"verb": "get", "resource": "pods", "namespace": NS}}},
        ),
    ]
    for _ in range(250):
        path, base = rng.choice(bases)
        body = _mutate(rng, base)
        response = api.post(f"{path}?dryRun=All&fieldValidation=Ignore", json=body)
        _well_formed(response)


FUZZ_TARGETS = {
    "clusterrole.pb": f"{RBAC}/clusterroles",
    "rolebinding.pb": f"{RBAC}/namespaces/{NS}/rolebindings",
    "namespace.pb": "/api/v1/namespaces",
    "serviceaccount.pb": SA,
    "ssar-resource.pb": "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
}


def test_seeded_protobuf_mutations_never_fail_the_server(api: httpx.Client) -> None:
    rng = random.Random(42)
    for _ in range(250):
        name = rng.choice(sorted(FUZZ_TARGETS))
        body = bytearray((FIXTURES / name).read_bytes())
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(body) or 1)
            choice = rng.randrange(4)
            if choice == 0 and body:
                body[at] = rng.randrange(256)
            elif choice == 1:
                del body[at : at + rng.randint(1, 8)]
            elif choice == 2:
                body[at:at] = b"\xff" * 9 + b"\x01"  # a varint that overflows 64 bits
            else:
                body[at:at] = bytes([0x0A, 0x7F])  # a length running past the end
        response = api.post(
            f"{FUZZ_TARGETS[name]}?dryRun=All",
            content=bytes(body),
            headers={"Content-Type": PROTOBUF},
        )
        _well_formed(response)


# --- large bodies ---------------------------------------------------

BIG = 400 * MIB
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


@pytest.fixture(scope="module")
def big_body_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A server of its own, so that the peak memory measured is the large bodies' alone."""
    root = tmp_path_factory.mktemp("api-big-body")
    with RegistryProcess(data_dir=root / "data", plain_http=True) as process:
        with process.client(process.admin_token) as client:
            assert client.post("/api/v1/namespaces", json={"metadata": {"name": NS}}).is_success
            assert client.post(IS, json={"metadata": {"name": "big"}}).status_code == 201
        yield process


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("method", "path", "content_type", "who"),
    [
        ("POST", SSAR, "application/json", "mallory"),  # any authenticated user may review
        ("POST", SSAR, PROTOBUF, "mallory"),
        ("PATCH", f"{IS}/big", MERGE, "admin"),
        ("PUT", f"{IS}/big", "application/json", "admin"),
    ],
)
def test_a_huge_body_is_refused_while_it_streams(
    big_body_server: RegistryProcess,
    method: str,
    path: str,
    content_type: str,
    who: str,
    declared: bool,
) -> None:
    """The API used to read a body whole before its size check: 400 MiB to
    SelfSubjectAccessReview grew the worker by 700 MB. Now a Content-Length over the 3 MiB
    limit is refused before reading and a chunked body as soon as it passes it."""
    server = big_body_server
    token = server.admin_token if who == "admin" else add_user_token(server, who)
    (worker,) = server.worker_pids()
    before = memory_mib(worker)
    with server.client(token, timeout=300) as client:
        response = client.request(
            method,
            path,
            content=stream(BIG),
            headers=body_headers(BIG, declared, content_type),
        )
        body = _status(response, 413)
        assert body["reason"] == "RequestEntityTooLarge"
        assert body["message"] == "the request body is larger than the limit of 3145728 bytes"
        review = {"spec": {"resourceAttributes": {"verb": "get", "resource": "imagestreams"}}}
        assert client.post(SSAR, json=review).status_code == 201  # the server still answers
    grown = memory_mib(worker, "VmHWM") - before
    assert grown < 100, f"the worker's peak memory grew by {grown:.0f} MiB"


# --- numbers beyond Python's 4300-digit int() limit -------------------

HUGE = "9" * 5000


def _huge_json(template: str) -> bytes:
    return template.replace("HUGE", HUGE).encode()


HUGE_CONTINUE = base64.urlsafe_b64encode(_huge_json('{"ns":HUGE,"name":"x"}')).decode()


PRUNERS = "/apis/imageregistry.operator.alauda.io/v1/imagepruners"
NUMBER_CASES = [
    pytest.param("GET", IS, {"limit": HUGE}, "", 400, id="limit"),
    pytest.param("GET", f"{IMG}/images", {"limit": HUGE}, "", 400, id="images-limit"),
    pytest.param("GET", IS, {"resourceVersion": HUGE}, "", 400, id="resourceVersion"),
    pytest.param("GET", IS, {"watch": "1", "timeoutSeconds": HUGE}, "", 400, id="timeoutSeconds"),
    pytest.param("GET", IS, {"watch": "1", "resourceVersion": HUGE}, "", 400, id="watch-rv"),
    pytest.param("GET", IS, {"limit": "1", "continue": HUGE_CONTINUE}, "", 400, id="continue"),
    pytest.param("POST", IS, {}, '{"metadata":{"name":"n1"},"spec":{"x":HUGE}}', 400, id="body"),
    pytest.param("POST", IS, {}, '{"metadata":{"name":"n2"},"spec":{"x":-HUGE}}', 400, id="neg"),
    pytest.param("POST", IS, {}, '{"metadata":{"name":"n3"},"spec":{"x":1e999}}', 400, id="1e999"),
    pytest.param("POST", IS, {}, '{"metadata":{"name":"n4"},"spec":{"x":NaN}}', 400, id="NaN"),
    pytest.param("POST", IS, {}, '{"metadata":{"name":"n5"},"spec":{"x":Infinity}}', 400, id="inf"),
    pytest.param(
        "POST", SSAR, {}, '{"spec":{"resourceAttributes":{"verb":HUGE}}}', 400, id="review"
    ),
    pytest.param("PATCH", f"{IS}/numbers", {}, '{"spec":{"x":HUGE}}', 400, id="merge-patch"),
    pytest.param(
        "PATCH",
        f"{IS}/numbers",
        {},
        '[{"op":"add","path":"/spec/tags/HUGE","value":{"name":"x"}}]',
        400,
        id="json-patch-index",
    ),
    pytest.param("DELETE", f"{IS}/numbers", {}, '{"gracePeriodSeconds":HUGE}', 400, id="delete"),
    pytest.param(
        "POST",
        f"{IMG}/imageprunes",
        {"dryRun": "All"},
        '{"spec":{"keepYoungerThan":"HUGEh"}}',
        400,
        id="prune-duration",
    ),
    pytest.param(
        "POST",
        PRUNERS,
        {"dryRun": "All"},
        '{"metadata":{"name":"cluster"},"spec":{"schedule":"*/HUGE * * * *"}}',
        422,
        id="pruner-schedule",
    ),
    pytest.param(
        "POST",
        PRUNERS,
        {"dryRun": "All"},
        '{"metadata":{"name":"cluster"},"spec":{"keepYoungerThanDuration":"HUGEh"}}',
        422,
        id="pruner-duration",
    ),
    pytest.param(
        "POST",
        PRUNERS,
        {"dryRun": "All"},
        '{"metadata":{"name":"cluster"},"spec":{"x":1e999}}',
        400,
        id="pruner-1e999",
    ),
    pytest.param(
        "POST",
        PRUNERS,
        {"dryRun": "All"},
        '{"metadata":{"name":"cluster"},"spec":{"x":NaN}}',
        400,
        id="pruner-NaN",
    ),
]


@pytest.mark.parametrize(("method", "path", "params", "body", "code"), NUMBER_CASES)
def test_a_5000_digit_number_is_refused_with_a_status(
    api: httpx.Client,
    method: str,
    path: str,
    params: dict[str, str],
    body: str,
    code: int,
) -> None:
    """Every number a request carries (query, JSON body, patch path, cron field, duration)
    is parsed within bounds: a 4xx Status, never a 500, and nothing stored."""
    if api.get(f"{IS}/numbers").status_code == 404:
        stream_body = {"metadata": {"name": "numbers"}, "spec": {"tags": [{"name": "a"}]}}
        assert api.post(IS, json=stream_body).status_code == 201
    content_type = "application/json"
    if method == "PATCH":
        content_type = JSON_PATCH if body.startswith("[") else MERGE
    headers = {"Content-Type": content_type} if body else {}
    content = _huge_json(body)
    response = api.request(method, path, params=params, content=content, headers=headers)
    status = _status(response, code)
    if code == 400:  # (a 422 names the invalid value as kube does: the schedule, whole)
        assert len(status["message"]) < 1000  # the number is cut, not echoed
    assert api.get(f"{IS}/numbers").status_code == 200  # the DELETE did not happen
    for name in ("n1", "n2", "n3", "n4", "n5"):
        assert api.get(f"{IS}/{name}").status_code == 404
