"""The signature extension API as skopeo drives it: header, GET, PUT and their errors."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from imageregistry.auth.authn import Authenticator
from imageregistry.auth.authorizer import MastersOnlyAuthorizer, Verdict
from imageregistry.auth.identity import Attributes
from imageregistry.auth.tokens import TokenSigner, generate_signing_key, hash_token
from imageregistry.metadata import signatures as sigdb
from imageregistry.metadata.signature_policy import POLICY_ANNOTATION
from imageregistry.metadata.tables import objects
from imageregistry.services import Services
from tests.unit.oci.conftest import REPO, FakeTokens, build_services, make_image, push_image, serve

PULLER = "puller-token"


class PullOnly:
    """Masters may do anything; `puller` may only get imagestreams/layers."""

    def authorize(self, attrs: Attributes) -> Verdict:
        if attrs.user.username == "puller":
            return Verdict(attrs.verb == "get" and attrs.resource == "imagestreams", "")
        return MastersOnlyAuthorizer().authorize(attrs)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = build_services(tmp_path)
    tokens = FakeTokens()
    tokens.known[hash_token(PULLER)] = ("puller", ())
    authn = Authenticator(tokens, TokenSigner(generate_signing_key()), "test-audience")
    built = dataclasses.replace(built, authn=authn, authz=PullOnly())
    yield built
    built.db.dispose()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with serve(services) as c:
        yield c


def _entry(
    digest: str, content: bytes, suffix: str = "0" * 32, **extra: object
) -> dict[str, object]:
    return {
        "schemaVersion": 2,
        "name": f"{digest}@{suffix}",
        "type": "atomic",
        "content": base64.b64encode(content).decode(),
        **extra,
    }


def _url(digest: str, repo: str = REPO) -> str:
    return f"/extensions/v2/{repo}/signatures/{digest}"


def test_every_v2_response_advertises_signatures(client: TestClient) -> None:
    for path in ("/v2/", f"/v2/{REPO}/tags/list", "/v2/_catalog"):
        assert client.get(path).headers.get("X-Registry-Supports-Signatures") == "1", path
    assert (
        client.get("/v2/", headers={"Authorization": ""}).headers["X-Registry-Supports-Signatures"]
        == "1"
    )
    assert "X-Registry-Supports-Signatures" not in client.get("/healthz").headers


def test_get_empty_then_put_then_list(client: TestClient) -> None:
    digest = push_image(client, make_image())
    r = client.get(_url(digest))
    assert r.status_code == 200
    assert r.json() == {"signatures": []}
    r = client.put(_url(digest), json=_entry(digest, b"\x89signed"))
    assert r.status_code == 201, r.text
    listed = client.get(_url(digest)).json()["signatures"]
    assert listed == [_entry(digest, b"\x89signed")]


def test_duplicate_content_is_409(client: TestClient) -> None:
    digest = push_image(client, make_image())
    assert client.put(_url(digest), json=_entry(digest, b"one")).status_code == 201
    r = client.put(_url(digest), json=_entry(digest, b"one", suffix="1" * 32))
    assert r.status_code == 409
    assert "already exists" in r.json()["errors"][0]["message"]
    assert len(client.get(_url(digest)).json()["signatures"]) == 1


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (None, "schemaVersion"),
        ("other-digest", "is not for image"),
        ("bad-type", "type must be"),
        ("bad-b64", "base64"),
        ("no-at", "<image digest>@<signature name>"),
    ],
)
def test_malformed_put_is_400(client: TestClient, body: object, needle: str) -> None:
    digest = push_image(client, make_image())
    entry = _entry(digest, b"x")
    raw: bytes | None = body if isinstance(body, bytes) else None
    if body is None:
        entry["schemaVersion"] = 1
    elif body == "other-digest":
        entry["name"] = "sha256:" + "f" * 64 + "@" + "0" * 32
    elif body == "bad-type":
        entry["type"] = "cosign"
    elif body == "bad-b64":
        entry["content"] = "!!!"
    elif body == "no-at":
        entry["name"] = digest
    r = (
        client.put(_url(digest), content=raw)
        if raw is not None
        else client.put(_url(digest), json=entry)
    )
    assert r.status_code == 400
    assert needle in r.json()["errors"][0]["message"]
    assert client.get(_url(digest)).json() == {"signatures": []}


def test_image_must_be_in_repository(client: TestClient) -> None:
    digest = push_image(client, make_image())
    push_image(client, make_image("b"), repo="team/other")
    missing = "sha256:" + "e" * 64
    assert client.get(_url(missing)).status_code == 404
    assert client.get(_url(digest, "team/other")).status_code == 404
    r = client.put(_url(digest, "team/other"), json=_entry(digest, b"x"))
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert client.get(f"/extensions/v2/Bad/Name/signatures/{digest}").status_code == 400


def test_authorization(client: TestClient) -> None:
    digest = push_image(client, make_image())
    anonymous = client.get(_url(digest), headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer realm=")
    puller = {"Authorization": f"Bearer {PULLER}"}
    assert client.get(_url(digest), headers=puller).status_code == 200
    denied = client.put(_url(digest), json=_entry(digest, b"x"), headers=puller)
    assert denied.status_code == 403
    assert denied.json()["errors"][0]["code"] == "DENIED"
    assert client.get(_url(digest)).json() == {"signatures": []}


def _require_signatures(services: Services, namespace: str) -> None:
    with services.db.write() as conn:
        row = conn.execute(
            select(objects.c.id, objects.c.body).where(
                objects.c.resource == "namespaces", objects.c.name == namespace
            )
        ).one()
        meta = {**row.body["metadata"], "annotations": {POLICY_ANNOTATION: "true"}}
        conn.execute(
            objects.update()
            .where(objects.c.id == row.id)
            .values(body={**row.body, "metadata": meta})
        )


def test_policy_refuses_untrusted_pulls(client: TestClient, services: Services) -> None:
    digest = push_image(client, make_image())
    assert client.get(f"/v2/{REPO}/manifests/latest").status_code == 200
    _require_signatures(services, REPO.split("/")[0])
    for ref in ("latest", digest):
        r = client.get(f"/v2/{REPO}/manifests/{ref}")
        assert r.status_code == 403
        error = r.json()["errors"][0]
        assert error["code"] == "DENIED"
        assert POLICY_ANNOTATION in error["message"]
        assert r.headers["X-Registry-Supports-Signatures"] == "1"
    assert client.head(f"/v2/{REPO}/manifests/latest").status_code == 403
    # Signatures themselves can still be listed; blobs are not images.
    assert client.get(_url(digest)).status_code == 200
    client.put(_url(digest), json=_entry(digest, b"sig"))
    assert client.get(f"/v2/{REPO}/manifests/latest").status_code == 403  # untrusted
    with services.db.write() as conn:
        sigdb.update_status(
            conn,
            f"{digest}@{'0' * 32}",
            {
                "conditions": [
                    {"type": "Trusted", "status": "True"},
                    {"type": "ForImage", "status": "True"},
                ]
            },
        )
    r = client.get(f"/v2/{REPO}/manifests/latest")
    assert r.status_code == 200
    assert r.content == make_image().manifest
