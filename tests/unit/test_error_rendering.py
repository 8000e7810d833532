"""Every surface renders every failure itself: an exception nobody expected becomes that
surface's 500 envelope (OCI `UNKNOWN` on `/v2/` and the signature extension, a Kubernetes
`Status` on the API and the usage endpoints), never Starlette's plain-text 500, and the
request id the response carries is in the log line and the OCI message.

The app is the production one (`server.build_app`, middleware included) over SQLite and
in-memory blobs; the failure is injected into authentication, which every surface calls first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from starlette.testclient import TestClient

from imageregistry.services import Services
from tests.unit.oci.conftest import build_services, serve

DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, Services]]:
    services = build_services(tmp_path)
    try:
        with serve(services) as c:
            yield c, services
    finally:
        services.db.dispose()


def broken(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise RuntimeError("the authenticator's backend broke")


OCI = [
    ("GET", "/v2/"),
    ("GET", f"/v2/team/app/blobs/{DIGEST}"),
    ("GET", "/v2/team/app/manifests/latest"),
    ("POST", "/v2/team/app/blobs/uploads/"),
    ("GET", f"/extensions/v2/team/app/signatures/{DIGEST}"),
]
API = [
    "/apis/image.alauda.io/v1/namespaces/team/imagestreams",
    "/api/v1/namespaces",
    "/apis/image.alauda.io/v1/imagestreamusages",
    "/apis/image.alauda.io/v1/namespaces/team/imageusages",
]


@pytest.mark.parametrize(("method", "path"), OCI)
def test_oci_surfaces_answer_the_oci_envelope(
    client: tuple[TestClient, Services],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
) -> None:
    http, services = client
    monkeypatch.setattr(services.authn, "authenticate", broken)
    monkeypatch.setattr(services.authn, "cached", lambda _header: None)
    with caplog.at_level(logging.ERROR):
        r = http.request(method, path)
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/json")
    [error] = r.json()["errors"]
    assert error["code"] == "UNKNOWN"
    request_id = r.headers["x-request-id"]
    assert request_id in error["message"]
    assert "RuntimeError" in error["message"]
    assert any(rec.exc_info and "broke" in str(rec.exc_info[1]) for rec in caplog.records)


def test_a_head_gets_the_status_without_a_body(
    client: tuple[TestClient, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    http, services = client
    monkeypatch.setattr(services.authn, "authenticate", broken)
    monkeypatch.setattr(services.authn, "cached", lambda _header: None)
    r = http.head(f"/v2/team/app/blobs/{DIGEST}")
    assert r.status_code == 500
    assert r.content == b""


@pytest.mark.parametrize("path", API)
def test_api_surfaces_answer_a_status(
    client: tuple[TestClient, Services], monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    http, services = client
    monkeypatch.setattr(services.authn, "authenticate", broken)
    monkeypatch.setattr(services.authn, "cached", lambda _header: None)
    r = http.get(path)
    assert r.status_code == 500
    status = r.json()
    assert (status["kind"], status["apiVersion"], status["reason"]) == (
        "Status",
        "v1",
        "InternalError",
    )
    assert status["code"] == 500
    assert "RuntimeError" in status["message"]
    assert r.headers["x-request-id"]
