"""The OCI route tables (`/v2/` and the signature extension `/extensions/v2/`): every route
declares the access it needs, and the surface's dispatcher enforces exactly that before any
handler runs (docs/architecture.md#request-pipelines).

The HTTP checks go through the production app (`server.build_app`, the inline manifest
pull layer included) over SQLite and in-memory blobs, with an authorizer that refuses one
access review and allows everything else.
"""

from __future__ import annotations

import ast
import base64
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from imageregistry.auth.authorizer import RegistryAction, Verdict, registry_attributes
from imageregistry.auth.identity import Attributes
from imageregistry.observability.routes import classify
from imageregistry.oci import pipeline
from imageregistry.oci.extension_routes import EXTENSION_ROUTES
from imageregistry.oci.v2_routes import V2_ROUTES
from imageregistry.services import Services
from tests.unit.oci.conftest import ADMIN, ALICE, make_image, push_image, serve, with_authorizer

DIGEST = "sha256:" + "a" * 64
EXAMPLES = {
    "{name}": "team/app",
    "{reference}": "latest",
    "{digest}": DIGEST,
    "{uuid}": "0b6c5f2e-3d0a-4e4b-9b1e-6f1d2c3a4b5c",
}
PUBLIC_ROUTES = {("/v2/token", "GET"), ("/v2/token", "HEAD"), ("/v2/token", "POST")}
LOGIN_ONLY_ROUTES = {("/v2/", "GET"), ("/v2/", "HEAD")}
SRC = Path(__file__).resolve().parents[3] / "src" / "imageregistry"
HANDLER_MODULES = ("blobs", "manifests", "referrers", "tags", "uploads", "signatures")
# (the surface's name in the request metrics, its route table)
SURFACES = (("oci", V2_ROUTES), ("extensions", EXTENSION_ROUTES))
ROUTES = (*V2_ROUTES, *EXTENSION_ROUTES)


def example(template: str, reference: str = "latest") -> str:
    path = template.replace("{reference}", reference)
    for placeholder, value in EXAMPLES.items():
        path = path.replace(placeholder, value)
    return path


def reviewed() -> list[tuple[str, str, RegistryAction]]:
    """(method, example path, action) for every review a route declares; a manifest
    DELETE once by tag and once by digest."""
    cases = []
    for route in ROUTES:
        for method, endpoint in route.endpoints.items():
            access = endpoint.access
            if isinstance(access, pipeline.ReviewByReference):
                cases.append((method, example(route.template), access.tag))
                cases.append((method, example(route.template, DIGEST), access.digest))
            else:
                cases += [(method, example(route.template), action) for action in access.actions]
    return cases


def test_every_route_declares_its_access() -> None:
    kinds = (
        pipeline.Review,
        pipeline.ReviewByReference,
        pipeline.PullReview,
        pipeline.Public,
        pipeline.Authenticated,
    )
    public, login_only = set(), set()
    for route in ROUTES:
        assert route.endpoints, route.template
        for method, endpoint in route.endpoints.items():
            assert isinstance(endpoint.access, kinds), (route.template, method)
            if isinstance(endpoint.access, pipeline.Public):
                public.add((route.template, method))
            elif isinstance(endpoint.access, pipeline.Authenticated):
                login_only.add((route.template, method))
            else:
                assert endpoint.access.actions, (route.template, method)
    # Only the token endpoint (the realm) and the ping are without an access review.
    assert public == PUBLIC_ROUTES
    assert login_only == LOGIN_ONLY_ROUTES


# docs/architecture.md#request-pipelines lists the same reviews (and
# docs/behaviour.md#registry-requests-and-their-access-reviews what each one is).
DOCUMENTED = {
    ("/v2/_catalog", "GET"): ("catalog",),
    ("/v2/_catalog", "HEAD"): ("catalog",),
    ("/v2/{name}/tags/list", "GET"): ("pull",),
    ("/v2/{name}/manifests/{reference}", "GET"): ("pull",),
    ("/v2/{name}/manifests/{reference}", "HEAD"): ("pull",),
    ("/v2/{name}/manifests/{reference}", "PUT"): ("push",),
    ("/v2/{name}/manifests/{reference}", "DELETE"): ("delete-tag", "delete-digest"),
    ("/v2/{name}/blobs/uploads/", "POST"): ("push",),
    ("/v2/{name}/blobs/uploads/{uuid}", "GET"): ("push",),
    ("/v2/{name}/blobs/uploads/{uuid}", "PATCH"): ("push",),
    ("/v2/{name}/blobs/uploads/{uuid}", "PUT"): ("push",),
    ("/v2/{name}/blobs/uploads/{uuid}", "DELETE"): ("push",),
    ("/v2/{name}/blobs/{digest}", "GET"): ("pull",),
    ("/v2/{name}/blobs/{digest}", "HEAD"): ("pull",),
    ("/v2/{name}/blobs/{digest}", "DELETE"): ("delete-digest",),
    ("/v2/{name}/referrers/{digest}", "GET"): ("pull",),
    ("/extensions/v2/{name}/signatures/{digest}", "GET"): ("pull",),
    ("/extensions/v2/{name}/signatures/{digest}", "HEAD"): ("pull",),
    ("/extensions/v2/{name}/signatures/{digest}", "PUT"): ("sign",),
}
SECONDARY = {
    ("/v2/{name}/manifests/{reference}", "PUT"): ("sign",),  # a pushed cosign signature
    ("/v2/{name}/blobs/uploads/", "POST"): ("pull",),  # a mount's source repository
}


def test_declared_reviews_are_the_documented_ones() -> None:
    declared, secondary = {}, {}
    for route in ROUTES:
        for method, endpoint in route.endpoints.items():
            if endpoint.access.actions:
                declared[route.template, method] = tuple(a.value for a in endpoint.access.actions)
            if endpoint.secondary:
                secondary[route.template, method] = tuple(a.value for a in endpoint.secondary)
    assert declared == DOCUMENTED
    assert secondary == SECONDARY


def test_route_templates_are_the_metrics_templates() -> None:
    """The table's templates are the ones the request metrics label requests with, so a
    metric or audit event taken in the dispatcher names the same route."""
    for surface, routes in SURFACES:
        for route in routes:
            path = example(route.template)
            assert classify(path) == (surface, route.template), path
            assert route.pattern.match(path), path


def test_no_handler_authorizes_on_its_own() -> None:
    """Handlers get an authorized context: none calls the gate or the authorizer."""
    for module in HANDLER_MODULES:
        tree = ast.parse((SRC / "oci" / f"{module}.py").read_text())
        called = {
            node.func.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        }
        names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert not called & {"authorize", "allowed", "run_as", "refusal"}, module
        assert "gate" not in names, module


class RefuseOne:
    """Refuses one action on team/app (or the catalog), allows every other review (all
    of them without an action)."""

    def __init__(self, action: RegistryAction | None) -> None:
        self.action = action
        self.asked: list[Attributes] = []

    def authorize(self, attrs: Attributes) -> Verdict:
        self.asked.append(attrs)
        if self.action is None:
            return Verdict(True)
        allowed = attrs != registry_attributes(attrs.user, self.action, "team", "app")
        return Verdict(allowed, "" if allowed else "refused by the test")


def _client(services: Services, authz: RefuseOne, token: str) -> AbstractContextManager[TestClient]:
    return serve(with_authorizer(services, authz), token)


@pytest.mark.parametrize(("method", "path", "action"), reviewed())
def test_a_route_is_refused_exactly_when_its_declared_review_is(
    services: Services, method: str, path: str, action: RegistryAction
) -> None:
    refused = RefuseOne(action)
    with _client(services, refused, ALICE) as alice:
        r = alice.request(method, path)
    assert r.status_code == 403, (method, path, r.text)
    if method != "HEAD":
        assert r.json()["errors"][0]["code"] == "DENIED"
    # The refused review is the first one the request took: nothing ran before it.
    assert refused.asked[0] == registry_attributes(refused.asked[0].user, action, "team", "app")

    with _client(services, RefuseOne(None), ALICE) as alice:
        other = alice.request(method, path)
    # Allowed, the same request gets past the review (whatever the handler answers).
    assert other.status_code not in (401, 403), (method, path, other.text)


def test_a_refused_delete_never_reaches_its_handler(services: Services) -> None:
    with _client(services, RefuseOne(RegistryAction.DELETE_TAG), ADMIN) as admin:
        push_image(admin, make_image())
    with _client(services, RefuseOne(RegistryAction.DELETE_TAG), ALICE) as alice:
        assert alice.delete("/v2/team/app/manifests/latest").status_code == 403
        assert alice.get("/v2/team/app/tags/list").json()["tags"] == ["latest"]


def test_a_refused_signature_put_never_reaches_its_handler(services: Services) -> None:
    with _client(services, RefuseOne(RegistryAction.SIGN), ADMIN) as admin:
        digest = push_image(admin, make_image())
    url = f"/extensions/v2/team/app/signatures/{digest}"
    entry = {
        "schemaVersion": 2,
        "name": f"{digest}@{'1' * 32}",
        "type": "atomic",
        "content": base64.b64encode(b"signed").decode(),
    }
    with _client(services, RefuseOne(RegistryAction.SIGN), ALICE) as alice:
        assert alice.put(url, json=entry).status_code == 403
        assert alice.get(url).json() == {"signatures": []}
    with _client(services, RefuseOne(None), ALICE) as alice:  # the same PUT, allowed
        assert alice.put(url, json=entry).status_code == 201
        assert len(alice.get(url).json()["signatures"]) == 1
