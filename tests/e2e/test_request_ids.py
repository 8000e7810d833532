"""Request ids: every answer of the main port carries `X-Request-Id` (the client's when
well-formed, a new one otherwise), and an error the server logs while handling a request
names that id, here in `log_format: json` lines."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator

import pytest

from tests.support.server import RegistryProcess

NEW_ID = re.compile(r"[0-9a-f]{12}-[0-9a-f]+")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = tmp_path_factory.mktemp("request-ids")
    with RegistryProcess(
        data_dir=root / "data", extra_args=["--workers", "2", "--log-format", "json"]
    ) as process:
        yield process


def test_every_answer_carries_an_id(server: RegistryProcess) -> None:
    with server.client(server.admin_token) as client:
        given = client.get("/v2/", headers={"X-Request-Id": "ci-run-7:step.3"})
        assert given.headers["x-request-id"] == "ci-run-7:step.3"
        for path in ("/v2/", "/v2/team/none/manifests/v1", "/api/v1/namespaces", "/healthz"):
            reply = client.get(path)
            assert NEW_ID.fullmatch(reply.headers["x-request-id"]), path
        ids = {client.get("/v2/").headers["x-request-id"] for _ in range(5)}
        assert len(ids) == 5
        for bad in (b"x" * 129, b"two words", "ünïcode".encode(), b""):
            reply = client.get("/v2/", headers={b"X-Request-Id": bad})
            assert NEW_ID.fullmatch(reply.headers["x-request-id"]), (bad, reply)
    with server.client() as anonymous:  # refused requests too
        reply = anonymous.get("/v2/", headers={"X-Request-Id": "anon-1"})
        assert reply.status_code == 401 and reply.headers["x-request-id"] == "anon-1"


def test_an_error_logged_during_a_request_names_its_id(server: RegistryProcess) -> None:
    data = os.urandom(4096)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with server.client(server.admin_token) as client:
        pushed = client.post(
            "/v2/team/app/blobs/uploads/",
            params={"digest": digest},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert pushed.status_code == 201, pushed.text
        (stored,) = [
            p for p in (server.data_dir / "blobs").rglob(digest.split(":")[1]) if p.is_file()
        ]
        stored.write_bytes(data[:100])  # damaged in storage: the server logs an error
        reply = client.get(f"/v2/team/app/blobs/{digest}", headers={"X-Request-Id": "dmg-42"})
        assert reply.status_code == 404
        assert reply.headers["x-request-id"] == "dmg-42"
    log = server.log_path
    entries = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if line.startswith("{") and '"request_id"' in line
    ]
    errors = [e for e in entries if e["level"] == "ERROR" and digest in e["message"]]
    assert errors, entries
    assert errors[0]["request_id"] == "dmg-42"
    assert errors[0]["logger"] == "imageregistry.oci.blobs"
