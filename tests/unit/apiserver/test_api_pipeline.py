"""The API's one pipeline: every route declares the action the dispatcher authorizes, and a
handler never runs for a request whose action is denied.

Design: docs/architecture.md#the-kubernetes-style-api-pipeline.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from imageregistry.apiserver import api_routes as api_routes_module
from imageregistry.apiserver.api_actions import ApiAction, ApiPath, ApiRoute, AuthorizedRequest
from imageregistry.apiserver.api_endpoints import ApiEndpoints
from imageregistry.apiserver.api_routes import api_collaborators, api_route_table
from imageregistry.apiserver.catalog import build_handlers
from imageregistry.services import Services
from tests.unit.oci.conftest import ADMIN, ALICE, serve

IMAGE = "image.alauda.io"
RBAC = "rbac.authorization.k8s.io"

# (method, path with query, the route that serves it, the action it must be authorized for)
SAMPLES = [
    ("GET", f"/apis/{IMAGE}/v1/imageusages", "image usage", ApiAction("list", IMAGE, "images")),
    (
        "GET",
        f"/apis/{IMAGE}/v1/namespaces/team/imageusages",
        "image usage",
        ApiAction("list", IMAGE, "imagestreams", namespace="team"),
    ),
    (
        "GET",
        f"/apis/{IMAGE}/v1/imagestreamusages",
        "image stream usage",
        ApiAction("list", IMAGE, "images"),
    ),
    (
        "GET",
        f"/apis/{IMAGE}/v1/namespaces/team/imagestreamusages",
        "image stream usage",
        ApiAction("list", IMAGE, "imagestreams", namespace="team"),
    ),
    ("GET", "/api", "discovery", ApiAction.on_path("get", "/api")),
    ("GET", "/apis/", "discovery", ApiAction.on_path("get", "/apis")),
    ("GET", f"/apis/{IMAGE}/v1", "discovery", ApiAction.on_path("get", f"/apis/{IMAGE}/v1")),
    ("GET", "/openapi/v3", "openapi", ApiAction.on_path("get", "/openapi/v3")),
    ("GET", "/api/v1/namespaces/team", "resource", ApiAction("get", "", "namespaces", name="team")),
    (
        "GET",
        f"/apis/{IMAGE}/v1/namespaces/team/imagestreams?watch=true",
        "resource",
        ApiAction("watch", IMAGE, "imagestreams", namespace="team"),
    ),
    (
        "GET",
        f"/apis/{IMAGE}/v1/imagestreams",
        "resource",
        ApiAction("list", IMAGE, "imagestreams"),
    ),
    ("POST", "/api/v1/namespaces", "resource", ApiAction("create", "", "namespaces")),
    (
        "PATCH",
        f"/apis/{IMAGE}/v1/namespaces/team/imagestreams/app/status",
        "resource",
        ApiAction(
            "patch", IMAGE, "imagestreams", subresource="status", namespace="team", name="app"
        ),
    ),
    (
        "PUT",
        f"/apis/{RBAC}/v1/clusterroles/viewer",
        "resource",
        ApiAction("update", RBAC, "clusterroles", name="viewer"),
    ),
    (
        "DELETE",
        f"/apis/{RBAC}/v1/namespaces/team/rolebindings/b",
        "resource",
        ApiAction("delete", RBAC, "rolebindings", namespace="team", name="b"),
    ),
    (
        "DELETE",
        f"/apis/{RBAC}/v1/namespaces/team/rolebindings",
        "resource",
        ApiAction("deletecollection", RBAC, "rolebindings", namespace="team"),
    ),
]


def _request(method: str, target: str) -> Request:
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": [],
    }
    return Request(scope)


@pytest.fixture
def table(services: Services) -> tuple[ApiRoute, ...]:
    api = api_collaborators(services)
    return api_route_table(ApiEndpoints(api, build_handlers(api)))


def _resolve(table: tuple[ApiRoute, ...], method: str, target: str) -> tuple[str, ApiAction]:
    request = _request(method, target)
    path = ApiPath.of(request.url.path)
    for route in table:
        match = route.match(request, path)
        if match is not None:
            return route.name, route.action(request, match)
    raise AssertionError(f"no route serves {method} {target}")


def test_every_route_declares_its_action(table: tuple[ApiRoute, ...]) -> None:
    """No route is public: each one, for each kind of request it serves, yields the access
    review the dispatcher asks before its handler runs."""
    served = {name for _, _, name, _ in SAMPLES}
    assert {route.name for route in table} == served
    for method, target, route, action in SAMPLES:
        assert _resolve(table, method, target) == (route, action), (method, target)


def test_a_usage_path_with_another_method_is_the_resource_route(
    table: tuple[ApiRoute, ...],
) -> None:
    with pytest.raises(Exception, match="could not find the requested resource"):
        _resolve(table, "POST", f"/apis/{IMAGE}/v1/imageusages")


class _Spy:
    def __init__(self) -> None:
        self.reached: list[str] = []

    def wrap(self, route: ApiRoute) -> ApiRoute:
        async def handler(authorized: AuthorizedRequest) -> Response:
            self.reached.append(route.name)
            return await route.handler(authorized)

        return dataclasses.replace(route, handler=handler)


@pytest.fixture
def spied(services: Services, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, _Spy]]:
    """The production app (`server.build_app`) whose API route table has every handler
    spied on."""
    spy = _Spy()

    def spied_table(endpoints: ApiEndpoints) -> tuple[ApiRoute, ...]:
        return tuple(spy.wrap(route) for route in api_route_table(endpoints))

    monkeypatch.setattr(api_routes_module, "api_route_table", spied_table)
    with serve(services, token=None) as client:
        yield client, spy


@pytest.mark.parametrize(("method", "target", "route", "action"), SAMPLES)
def test_a_denied_action_never_reaches_the_handler(
    spied: tuple[TestClient, _Spy], method: str, target: str, route: str, action: ApiAction
) -> None:
    client, spy = spied
    denied = client.request(method, target, headers={"Authorization": f"Bearer {ALICE}"})
    assert denied.status_code == 403
    assert denied.json()["reason"] == "Forbidden"
    assert spy.reached == []
    refused = client.request(method, target, headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401 and spy.reached == []


def test_an_allowed_action_reaches_the_handler(spied: tuple[TestClient, _Spy]) -> None:
    client, spy = spied
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert client.get("/api/v1/namespaces/default", headers=admin).status_code == 200
    assert client.get("/openapi/v3", headers=admin).status_code == 200
    assert spy.reached == ["resource", "openapi"]


def test_a_denied_create_changes_nothing(spied: tuple[TestClient, _Spy]) -> None:
    client, _ = spied
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mallory"}}
    alice = client.post(
        "/api/v1/namespaces", json=body, headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert alice.status_code == 403
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert client.get("/api/v1/namespaces/mallory", headers=admin).status_code == 404


def test_only_the_pipeline_and_named_admission_steps_call_an_authorizer() -> None:
    """Handlers never authorize their request: in `apiserver/`, `.authorize(` is called only
    by the dispatcher's authentication/authorization steps (`request_context.py`) and by the
    named admission reviews (`admission.py`)."""
    package = Path(__file__).resolve().parents[3] / "src" / "imageregistry" / "apiserver"
    callers, importers = set(), set()
    for path in package.rglob("*.py"):
        module = path.relative_to(package).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "authorize"
            ):
                callers.add(module)
            if isinstance(node, ast.ImportFrom) and any(
                alias.name == "authorize_request" for alias in node.names
            ):
                importers.add(module)
    assert callers == {"request_context.py", "admission.py"}
    assert importers == {"api_dispatch.py"}
