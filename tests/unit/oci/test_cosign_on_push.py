"""A pushed cosign signature manifest is listed on the image it signs."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from imageregistry.metadata.signatures import list_signatures
from imageregistry.services import Services
from imageregistry.signatures import cosign
from imageregistry.signatures.simplesigning import COSIGN_TYPE, build_payload
from tests.unit.oci.conftest import REPO, make_image, push_blob, push_image, sha

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _push_signature(client: TestClient, image_digest: str, *, as_referrer: bool) -> None:
    payload = build_payload(f"127.0.0.1/{REPO}:latest", image_digest, signature_type=COSIGN_TYPE)
    signature = cosign.sign_cosign(payload, ec.generate_private_key(ec.SECP256R1()))
    subject = None
    if as_referrer:
        subject = cosign.Descriptor(OCI_MANIFEST, image_digest, 100)
    manifest, config = cosign.build_cosign_signature_manifest(payload, signature, subject)
    push_blob(client, payload)
    push_blob(client, config)
    ref = sha(manifest) if as_referrer else f"sha256-{image_digest.split(':')[1]}.sig"
    r = client.put(
        f"/v2/{REPO}/manifests/{ref}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 201, r.text


def _cosign_names(services: Services, digest: str) -> list[str]:
    with services.db.read() as conn:
        return [s.name for s in list_signatures(conn, digest) if s.type == "cosign"]


def test_sig_tag_signature_is_listed_on_the_image(client: TestClient, services: Services) -> None:
    digest = push_image(client, make_image("signed"))
    _push_signature(client, digest, as_referrer=False)
    names = _cosign_names(services, digest)
    assert len(names) == 1 and names[0].startswith(f"{digest}@cosign-")


def test_referrer_signature_is_listed_once(client: TestClient, services: Services) -> None:
    digest = push_image(client, make_image("referred"))
    _push_signature(client, digest, as_referrer=True)
    _push_signature(client, digest, as_referrer=True)  # a second, different signature
    assert len(_cosign_names(services, digest)) == 2


def test_plain_manifest_adds_no_signature(client: TestClient, services: Services) -> None:
    digest = push_image(client, make_image("plain"))
    other = make_image("other")
    assert json.loads(other.manifest)["layers"]
    push_image(client, other, ref="v2")
    assert _cosign_names(services, digest) == []
