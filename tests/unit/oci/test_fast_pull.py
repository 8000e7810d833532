"""Manifest pulls answered on the event loop in front of the router
(`oci.inline_pull.InlinePullLayer`, as `server.build_app` composes it): allowed and found
pulls are answered without the router, everything else reaches the router unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from imageregistry.auth.authorizer import Verdict
from imageregistry.auth.identity import Attributes
from imageregistry.server import build_app
from imageregistry.services import Services
from tests.unit.oci.conftest import (
    ADMIN,
    ALICE,
    REPO,
    alongside,
    make_image,
    push_image,
    serve,
    with_authorizer,
)


class Recording:
    """The router behind the fast path; remembers which requests reached it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture
def app(services: Services) -> Starlette:
    return build_app(services)


@pytest.fixture
def behind(app: Starlette) -> Recording:
    """Everything the app's middleware (the fast path among it) hands on to its routes."""
    behind = Recording(app.router.middleware_stack)
    app.router.middleware_stack = behind
    return behind


@pytest.fixture
def fast_client(app: Starlette, behind: Recording) -> Iterator[TestClient]:
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN}"}) as c:
        yield c


def test_allowed_pulls_are_answered_in_front(fast_client: TestClient, behind: Recording) -> None:
    image = make_image()
    digest = push_image(fast_client, image)
    behind.seen.clear()
    for ref in ("latest", digest):
        r = fast_client.get(f"/v2/{REPO}/manifests/{ref}")
        assert r.status_code == 200
        assert r.content == image.manifest
        assert r.headers["Docker-Content-Digest"] == digest
        assert r.headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert r.headers["X-Registry-Supports-Signatures"] == "1"
    head = fast_client.head(f"/v2/{REPO}/manifests/latest")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(image.manifest))
    assert behind.seen == []


def test_refusals_and_misses_reach_the_general_path(
    fast_client: TestClient, behind: Recording
) -> None:
    push_image(fast_client, make_image())
    behind.seen.clear()
    missing = fast_client.get(f"/v2/{REPO}/manifests/nope")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    anonymous = fast_client.get(f"/v2/{REPO}/manifests/latest", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert "Bearer realm=" in anonymous.headers["WWW-Authenticate"]
    denied = fast_client.get(
        f"/v2/{REPO}/manifests/latest", headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert denied.status_code == 403
    assert denied.json()["errors"][0]["code"] == "DENIED"
    bad = fast_client.get("/v2/Team/App/manifests/latest")
    assert bad.status_code == 400
    path = f"/v2/{REPO}/manifests/"
    assert behind.seen == [
        path + "nope",
        path + "latest",
        path + "latest",
        "/v2/Team/App/manifests/latest",
    ]


def test_etag_is_the_digest_and_if_none_match_answers_304(
    fast_client: TestClient, behind: Recording
) -> None:
    digest = push_image(fast_client, make_image())
    etag, other = f'"{digest}"', f'"sha256:{"0" * 64}"'
    url = f"/v2/{REPO}/manifests/latest"
    general = alongside(fast_client, ADMIN, app=behind.app)
    for client in (fast_client, general):  # the fast path and the router answer alike
        full = client.get(url)
        assert full.status_code == 200 and full.headers["ETag"] == etag
        for cached in (etag, f"{other}, W/{etag}", "*"):
            for method in ("GET", "HEAD"):
                r = client.request(method, url, headers={"If-None-Match": cached})
                assert r.status_code == 304 and r.content == b"", (method, cached)
                assert r.headers["ETag"] == etag
                assert r.headers["Docker-Content-Digest"] == digest
        changed = client.get(url, headers={"If-None-Match": other})
        assert changed.status_code == 200 and changed.content == full.content


class RemoteAuthorizer:
    """Stands in for an authorizer that asks another server (SubjectAccessReview in
    cluster mode; no cluster here): allows masters, and records whether each decision ran
    on the event loop, where it would block every other request while it waits."""

    def __init__(self) -> None:
        self.on_loop: list[bool] = []

    def authorize(self, attrs: Attributes) -> Verdict:
        try:
            asyncio.get_running_loop()
            self.on_loop.append(True)
        except RuntimeError:
            self.on_loop.append(False)
        return Verdict(attrs.user.in_group("system:masters"), "")


def test_a_remote_authorizer_never_decides_on_the_event_loop(services: Services) -> None:
    remote = RemoteAuthorizer()
    with serve(with_authorizer(services, remote)) as client:
        image = make_image()
        push_image(client, image)
        assert client.get(f"/v2/{REPO}/manifests/latest").content == image.manifest
        # No credentials: the caller is known without I/O (anonymous), the pull is not.
        anonymous = client.get(f"/v2/{REPO}/manifests/latest", headers={"Authorization": ""})
        assert anonymous.status_code == 401
    assert remote.on_loop and not any(remote.on_loop)
