"""Cosign signatures pushed as manifests, by tenants of separate namespaces.

Real HTTP against a server subprocess. team-a owns an image; alice may push and sign in
team-a, carol may only push there, bob may push and sign in team-b only. What a push
records on an Image is checked through the image API as the cluster admin.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from imageregistry.signatures import cosign
from imageregistry.signatures.simplesigning import COSIGN_TYPE, build_payload
from tests.e2e.kubectl_support import add_user_token
from tests.e2e.oci_support import image_manifest, sha
from tests.support.server import RegistryProcess

IMAGES = "/apis/image.alauda.io/v1/images"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
OCI_MANIFEST = cosign.OCI_MANIFEST_MEDIA_TYPE


@dataclass(frozen=True)
class Tenants:
    server: RegistryProcess
    alice: str  # pusher + signer in team-a
    carol: str  # pusher in team-a, no signing right
    bob: str  # pusher + signer in team-b only

    def client(self, token: str | None = None) -> httpx.Client:
        return self.server.client(token or self.server.admin_token, timeout=120)


def _bind(admin: httpx.Client, namespace: str, role: str, user: str) -> None:
    body = {
        "metadata": {"name": f"{user}-{role.split(':')[-1]}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
    }
    r = admin.post(f"{RBAC}/namespaces/{namespace}/rolebindings", json=body)
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def tenants(registry: RegistryProcess) -> Tenants:
    with registry.client(registry.admin_token) as admin:
        for namespace in ("team-a", "team-b"):
            r = admin.post("/api/v1/namespaces", json={"metadata": {"name": namespace}})
            assert r.status_code == 201, r.text
        for namespace, role, user in (
            ("team-a", "system:image-pusher", "alice"),
            ("team-a", "system:image-signer", "alice"),
            ("team-a", "system:image-pusher", "carol"),
            ("team-b", "system:image-pusher", "bob"),
            ("team-b", "system:image-signer", "bob"),
        ):
            _bind(admin, namespace, role, user)
    return Tenants(
        registry,
        add_user_token(registry, "alice"),
        add_user_token(registry, "carol"),
        add_user_token(registry, "bob"),
    )


def upload(client: httpx.Client, repo: str, blob: bytes) -> None:
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha(blob)}, content=blob)
    assert r.status_code == 201, r.text


def put_manifest(client: httpx.Client, repo: str, ref: str, manifest: bytes) -> httpx.Response:
    return client.put(
        f"/v2/{repo}/manifests/{ref}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )


def push_image(tenants: Tenants, repo: str, seed: str, token: str | None = None) -> str:
    """A one-layer image at `repo:latest`; returns its digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = seed.encode() * 64
    manifest = image_manifest(config, [layer])
    with tenants.client(token) as client:
        for blob in (config, layer):
            upload(client, repo, blob)
        r = put_manifest(client, repo, "latest", manifest)
        assert r.status_code == 201, r.text
    return sha(manifest)


def payload_for(tenants: Tenants, repo: str, digest: str, pad: int = 0) -> bytes:
    """A cosign simple-signing payload for the image, padded to about `pad` bytes."""
    payload = build_payload(
        f"{tenants.server.host}/{repo}:latest", digest, signature_type=COSIGN_TYPE
    )
    if pad <= len(payload):
        return payload
    doc = json.loads(payload)
    doc["optional"] = {"pad": ""}
    doc["optional"]["pad"] = "x" * (pad - len(json.dumps(doc, separators=(",", ":"))))
    return json.dumps(doc, separators=(",", ":")).encode()


def signature_manifest(payloads: Sequence[bytes], subject: str | None, size: int = 0) -> bytes:
    """A cosign signature manifest with one simple-signing layer per payload."""
    key = ec.generate_private_key(ec.SECP256R1())
    config = cosign.cosign_config(payloads[0])
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": cosign.OCI_CONFIG_MEDIA_TYPE, "size": len(config)},
        "layers": [
            {
                "mediaType": cosign.SIMPLESIGNING_MEDIA_TYPE,
                "size": len(p),
                "digest": sha(p),
                "annotations": {cosign.SIGNATURE_ANNOTATION: cosign.sign_cosign(p, key)},
            }
            for p in payloads
        ],
    }
    doc["config"]["digest"] = sha(config)
    if subject is not None:
        doc["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": size}
    return json.dumps(doc, separators=(",", ":")).encode()


def push_signature(
    tenants: Tenants,
    token: str,
    repo: str,
    image: str,
    payloads: Sequence[bytes],
    *,
    referrer: bool = True,
) -> tuple[httpx.Response, str]:
    """Upload the payloads and config, then PUT the signature manifest by digest (OCI
    referrer) or under cosign's `sha256-<hex>.sig` tag; returns the answer and the digest."""
    manifest = signature_manifest(payloads, image if referrer else None)
    with tenants.client(token) as client:
        for blob in {cosign.cosign_config(payloads[0]), *payloads}:
            upload(client, repo, blob)
        ref = sha(manifest) if referrer else cosign.signature_tag(image)
        return put_manifest(client, repo, ref, manifest), sha(manifest)


def signatures_of(tenants: Tenants, digest: str) -> list[dict[str, Any]]:
    with tenants.client() as admin:
        r = admin.get(f"{IMAGES}/{digest}")
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json().get("signatures") or []
    return found


def _error(r: httpx.Response) -> tuple[int, str, str]:
    entry = r.json()["errors"][0]
    return r.status_code, str(entry["code"]), str(entry["message"])


def test_payload_check_answers_alike_for_unreadable_and_missing_blobs(tenants: Tenants) -> None:
    """A push may only look into blobs of its own repository: a layer typed as a cosign
    payload that names another tenant's blob is answered exactly like a missing blob, so
    the answer does not reveal what team-a stores."""
    secret = b"team-a private layer, not JSON\n" * 32
    with tenants.client(tenants.alice) as alice:
        upload(alice, "team-a/private", secret)
    missing = bytes(b ^ 1 for b in secret)  # same size, never uploaded
    answers = []
    for blob in (secret, missing):
        doc = json.loads(signature_manifest([payload_for(tenants, "team-b/x", "sha256:0")], None))
        doc["layers"][0].update(digest=sha(blob), size=len(blob))
        with tenants.client(tenants.bob) as bob:
            upload(
                bob,
                "team-b/probe",
                cosign.cosign_config(payload_for(tenants, "team-b/x", "sha256:0")),
            )
            r = put_manifest(bob, "team-b/probe", "probe", json.dumps(doc).encode())
        status, code, message = _error(r)
        answers.append((status, code, message.replace(sha(blob), "<digest>")))
    assert answers[0] == answers[1], answers
    assert answers[0][:2] == (400, "MANIFEST_BLOB_UNKNOWN")


MIB = 1 << 20


def big_payloads(tenants: Tenants, repo: str, image: str, count: int = 32) -> list[bytes]:
    """`count` distinct simple-signing payloads of just under 1 MiB each (the largest a
    push accepts under that media type)."""
    return [payload_for(tenants, repo, image, pad=MIB - 64 - i) for i in range(count)]


@pytest.mark.parametrize("referrer", [True, False], ids=["subject", "sig-tag"])
def test_a_tenant_cannot_attach_signatures_to_another_namespaces_image(
    tenants: Tenants, referrer: bool
) -> None:
    """The attack: bob, who may push and sign only in team-b, pushes a cosign
    signature manifest of 32 x 1 MiB payloads naming a team-a image. The push is an
    ordinary artifact in team-b (OCI lets a referrer precede its subject, and the answer
    must not reveal whether team-a has the image), but nothing is recorded on the image,
    and the owner can still sign it afterwards."""
    name = "victim-ref" if referrer else "victim-tag"
    image = push_image(tenants, f"team-a/{name}", name, token=tenants.alice)
    payloads = big_payloads(tenants, f"team-a/{name}", image)
    r, _ = push_signature(tenants, tenants.bob, "team-b/sigs", image, payloads, referrer=referrer)
    assert r.status_code == 201, r.text
    assert signatures_of(tenants, image) == []
    with tenants.client() as admin:
        listed = admin.get(IMAGES)
    assert listed.status_code == 200 and len(listed.content) < MIB
    # The owner's legitimate signature, by push and through the extension, still lands.
    own = [payload_for(tenants, f"team-a/{name}", image)]
    r, _ = push_signature(tenants, tenants.alice, f"team-a/{name}", image, own, referrer=referrer)
    assert r.status_code == 201, r.text
    entry = {
        "schemaVersion": 2,
        "name": f"{image}@{'a' * 32}",
        "type": "atomic",
        "content": "b3duZXI=",
    }
    with tenants.client(tenants.alice) as alice:
        put = alice.put(f"/extensions/v2/team-a/{name}/signatures/{image}", json=entry)
    assert put.status_code == 201, put.text
    assert sorted(s["type"] for s in signatures_of(tenants, image)) == ["atomic", "cosign"]


def test_a_pusher_without_the_signing_right_is_refused_and_nothing_stays(
    tenants: Tenants,
) -> None:
    """carol may push to team-a but not sign there: her signature manifest for a team-a
    image would record a signature, so the whole push is refused, as the extension's PUT
    refuses her."""
    image = push_image(tenants, "team-a/unsigned", "unsigned", token=tenants.alice)
    own = [payload_for(tenants, "team-a/unsigned", image)]
    for referrer in (True, False):
        r, digest = push_signature(
            tenants, tenants.carol, "team-a/unsigned", image, own, referrer=referrer
        )
        assert (r.status_code, _error(r)[1]) == (403, "DENIED"), r.text
        assert "create imagesignatures" in _error(r)[2]
        with tenants.client(tenants.alice) as alice:
            assert alice.get(f"/v2/team-a/unsigned/manifests/{digest}").status_code == 404
            tags = alice.get("/v2/team-a/unsigned/tags/list").json()["tags"]
        assert tags == ["latest"]
    assert signatures_of(tenants, image) == []


def test_signature_limits_hold_for_pushed_signatures(tenants: Tenants) -> None:
    """Even the owner cannot push more than the image's signature list may hold (what
    skopeo and podman read): 32 x 1 MiB is refused whole with 413, nothing is recorded
    or stored, and a normal signature is accepted afterwards."""
    image = push_image(tenants, "team-a/limits", "limits", token=tenants.alice)
    payloads = big_payloads(tenants, "team-a/limits", image)
    r, digest = push_signature(tenants, tenants.alice, "team-a/limits", image, payloads)
    assert (r.status_code, _error(r)[1]) == (413, "DENIED"), r.text
    assert "would exceed" in _error(r)[2]
    assert signatures_of(tenants, image) == []
    with tenants.client(tenants.alice) as alice:
        assert alice.get(f"/v2/team-a/limits/manifests/{digest}").status_code == 404
        referrers = alice.get(f"/v2/team-a/limits/referrers/{image}").json()
    assert referrers["manifests"] == []
    own = [payload_for(tenants, "team-a/limits", image)]
    r, _ = push_signature(tenants, tenants.alice, "team-a/limits", image, own)
    assert r.status_code == 201, r.text
    assert [s["type"] for s in signatures_of(tenants, image)] == ["cosign"]


def test_deleting_the_signature_manifest_removes_its_signatures(tenants: Tenants) -> None:
    """A signature recorded from a push lives as long as the pushed manifest: deleting
    the manifest (referrer by digest; `.sig` tag, then its digest) removes it, and leaves
    signatures that came another way alone."""
    image = push_image(tenants, "team-a/deleted", "deleted", token=tenants.alice)
    entry = {"schemaVersion": 2, "name": f"{image}@{'b' * 32}", "type": "atomic"}
    with tenants.client(tenants.alice) as alice:
        put = alice.put(
            f"/extensions/v2/team-a/deleted/signatures/{image}",
            json={**entry, "content": "ZXh0ZW5zaW9u"},
        )
    assert put.status_code == 201, put.text
    for referrer in (True, False):
        own = [payload_for(tenants, "team-a/deleted", image, pad=300 + referrer)]
        r, digest = push_signature(
            tenants, tenants.alice, "team-a/deleted", image, own, referrer=referrer
        )
        assert r.status_code == 201, r.text
        assert sorted(s["type"] for s in signatures_of(tenants, image)) == ["atomic", "cosign"]
        with tenants.client() as admin:  # deleting needs system:image-deleter
            if not referrer:
                tag = cosign.signature_tag(image)
                r = admin.delete(f"/v2/team-a/deleted/manifests/{tag}")
                assert r.status_code == 202, r.text
            r = admin.delete(f"/v2/team-a/deleted/manifests/{digest}")
            assert r.status_code == 202, r.text
        assert [s["type"] for s in signatures_of(tenants, image)] == ["atomic"]
