"""The authentication challenge, the token endpoint and the one authorization seam."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.testclient import TestClient

from imageregistry.auth.authorizer import Verdict
from imageregistry.auth.identity import Attributes
from imageregistry.oci.v2_routes import oci_routes
from imageregistry.services import Services
from tests.unit.oci.conftest import (
    ADMIN,
    ALICE,
    REPO,
    basic,
    make_image,
    push_image,
    serve,
    with_authorizer,
)


class AllowAll:
    def authorize(self, attrs: Attributes) -> Verdict:
        return Verdict(True)


def test_base_endpoint(client: TestClient, anon: TestClient) -> None:
    r = client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    r = anon.get("/v2/")
    assert r.status_code == 401
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="http://testserver/v2/token"')
    assert 'service="imageregistry"' in challenge


def test_bad_credentials_are_401(anon: TestClient) -> None:
    for header in ("Bearer nope", basic("x", "nope"), "Digest abc"):
        r = anon.get("/v2/", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert "www-authenticate" in r.headers


def test_basic_with_token_password_works(anon: TestClient) -> None:
    r = anon.get("/v2/", headers={"Authorization": basic("anyone", ADMIN)})
    assert r.status_code == 200


def test_anonymous_denied_is_401_with_scope_authenticated_denied_is_403(
    client: TestClient, anon: TestClient
) -> None:
    push_image(client, make_image())
    r = anon.get(f"/v2/{REPO}/manifests/latest")
    assert r.status_code == 401
    assert f'scope="repository:{REPO}:pull"' in r.headers["www-authenticate"]
    r = anon.get(f"/v2/{REPO}/manifests/latest", headers={"Authorization": f"Bearer {ALICE}"})
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    r = anon.post(f"/v2/{REPO}/blobs/uploads/", headers={"Authorization": f"Bearer {ALICE}"})
    assert r.status_code == 403
    r = anon.get("/v2/_catalog", headers={"Authorization": f"Bearer {ALICE}"})
    assert r.status_code == 403


def test_token_endpoint_hands_back_a_presented_token(anon: TestClient) -> None:
    c = anon
    r = c.get(
        "/v2/token",
        params=[("scope", f"repository:{REPO}:pull"), ("scope", "repository:x/y:push")],
        headers={"Authorization": basic("u", ADMIN)},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["token"] == body["access_token"] == ADMIN
    assert body["expires_in"] >= 60 and body["issued_at"]
    r = c.get("/v2/token", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.json()["token"] == ADMIN


def test_token_endpoint_for_anonymous_and_bad_credentials(anon: TestClient) -> None:
    c = anon
    r = c.get("/v2/token", params={"scope": f"repository:{REPO}:pull"})
    assert r.status_code == 200
    token = r.json()["token"]
    # An anonymous token authenticates as the anonymous user, who is still denied.
    r = c.get("/v2/", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    r = c.get("/v2/token", headers={"Authorization": basic("u", "wrong")})
    assert r.status_code == 401


def test_push_into_missing_namespace_by_non_admin_is_name_unknown(services: Services) -> None:
    with serve(with_authorizer(services, AllowAll()), ALICE) as c:
        r = c.post("/v2/nowhere/app/blobs/uploads/")
    assert r.status_code == 404
    error = r.json()["errors"][0]
    assert error["code"] == "NAME_UNKNOWN" and "does not exist" in error["message"]


def test_extension_routes_and_headers_plug_in(services: Services) -> None:
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(_request: object) -> PlainTextResponse:
        return PlainTextResponse("ext")

    routes = oci_routes(
        services,
        extensions=[Route("/extensions/v2/hello", hello)],
        headers={"X-Registry-Supports-Signatures": "1"},
    )
    c = TestClient(Starlette(routes=routes), headers={"Authorization": f"Bearer {ADMIN}"})
    assert c.get("/extensions/v2/hello").text == "ext"
    r = c.get("/v2/")
    assert r.headers["x-registry-supports-signatures"] == "1"


def test_non_admin_push_into_an_existing_namespace_creates_the_stream(
    client: TestClient, services: Services
) -> None:
    push_image(client, make_image())  # the admin's push created namespace "team"
    with serve(with_authorizer(services, AllowAll()), ALICE) as alice:
        push_image(alice, make_image("b"), "v1", repo="team/new")
        assert alice.get("/v2/team/new/tags/list").json()["tags"] == ["v1"]
