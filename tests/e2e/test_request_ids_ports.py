"""Request ids and audit events on the listeners beside the main port: every answer of the
blob port and of `metrics_listen` carries `X-Request-Id` (the client's when well-formed,
a new one otherwise: too long, a control character, not ASCII), and the audit event of the
request names the same id. A blob-port GET is recorded as the pull of a blob by the link's
holder, without the link's signature."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.oci_support import push_blob
from tests.support.postgres import free_port
from tests.support.server import RegistryProcess

NEW_ID = re.compile(r"[0-9a-f]{12}-[0-9a-f]+")
BIG = os.urandom(2 * 1024 * 1024 + 3)  # above the redirect threshold
MALFORMED = (b"x" * 500, b"bad\tid", "\u00e9t\u00e9".encode("latin-1"))


class Ports:
    def __init__(self, server: RegistryProcess, blob: str, metrics: str, log: Path) -> None:
        self.server = server
        self.blob = blob
        self.metrics = metrics
        self.log = log


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    root = tmp_path_factory.mktemp("request-ids-ports")
    policy = root / "policy.yaml"
    policy.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
        "rules:\n  - level: Metadata\n"
    )
    blob, metrics, log = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", root / "audit.log"
    with RegistryProcess(
        data_dir=root / "data",
        plain_http=True,
        extra_args=[
            "--workers",
            "2",
            "--blob-listen",
            blob,
            "--metrics-listen",
            metrics,
            "--audit-log-path",
            str(log),
            "--audit-policy-file",
            str(policy),
        ],
    ) as server:
        yield Ports(server, blob, metrics, log)


def raw_get(address: str, target: str, request_id: bytes, token: str = "") -> dict[str, str]:
    """The status line and headers of a GET sent byte for byte (an HTTP client library
    refuses to send some of the malformed ids)."""
    host, port = address.rsplit(":", 1)
    head = f"GET {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n".encode()
    head += b"X-Request-Id: " + request_id + b"\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + b"\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    status, *lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {"status": status.split(" ")[1]}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def events(log: Path, match: Callable[[dict[str, Any]], bool], count: int) -> list[dict[str, Any]]:
    """The audit events `match` accepts, once there are `count` of them (events are
    written a moment after their response)."""
    deadline = time.monotonic() + 30
    while True:
        found = [e for e in map(json.loads, log.read_bytes().splitlines()) if match(e)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_blob_port_answers_carry_the_id_and_the_audit_event_names_it(ports: Ports) -> None:
    server = ports.server
    with server.client(server.admin_token) as client:
        digest = push_blob(client, BIG)
        redirect = client.get(f"/v2/team/app/blobs/{digest}")
    assert redirect.status_code == 307, redirect.text
    location = urlsplit(redirect.headers["location"])
    target = f"{location.path}?{location.query}"
    assert location.netloc == ports.blob

    given = httpx.get(redirect.headers["location"], headers={"X-Request-Id": "pull-7:a.b"})
    assert given.status_code == 200 and given.content == BIG
    assert given.headers["x-request-id"] == "pull-7:a.b"
    refused = raw_get(ports.blob, target.replace("signature=", "signature=x"), b"forged-1")
    assert refused["status"] == "403" and refused["x-request-id"] == "forged-1"
    replaced = []
    for bad in MALFORMED:
        answer = raw_get(ports.blob, target, bad)
        assert answer["status"] == "200", (bad, answer)
        assert NEW_ID.fullmatch(answer["x-request-id"]), (bad, answer)
        replaced.append(answer["x-request-id"])
    assert len(set(replaced)) == len(MALFORMED)

    (pulled,) = events(ports.log, lambda e: e["auditID"] == "pull-7:a.b", 1)
    assert pulled["requestURI"] == f"/blobs/{digest}"
    assert pulled["verb"] == "get" and pulled["responseStatus"]["code"] == 200
    assert pulled["user"]["username"] == "system:anonymous"
    assert pulled["objectRef"]["resource"] == "imagestreams"
    assert pulled["objectRef"]["subresource"] == "layers"
    assert pulled["annotations"]["authorization.k8s.io/decision"] == "allow"
    (forged,) = events(ports.log, lambda e: e["auditID"] == "forged-1", 1)
    assert forged["responseStatus"]["code"] == 403
    assert forged["annotations"]["authorization.k8s.io/decision"] == "forbid"
    found = events(ports.log, lambda e: e["auditID"] in replaced, len(replaced))
    assert sorted(e["auditID"] for e in found) == sorted(replaced)
    signature = dict(p.split("=", 1) for p in location.query.split("&"))["signature"]
    written = ports.log.read_text()
    assert signature not in written and "signature=" not in written  # the link's secret


def test_metrics_listen_answers_carry_the_id_and_the_audit_event_names_it(ports: Ports) -> None:
    token = ports.server.admin_token
    url = f"http://{ports.metrics}/metrics"
    scraped = httpx.get(url, headers={"Authorization": f"Bearer {token}", "X-Request-Id": "s-1"})
    assert scraped.status_code == 200 and scraped.headers["x-request-id"] == "s-1"
    refused = httpx.get(url, headers={"X-Request-Id": "s-anon"})
    assert refused.status_code == 403 and refused.headers["x-request-id"] == "s-anon"
    elsewhere = httpx.get(f"http://{ports.metrics}/v2/", headers={"X-Request-Id": "s-404"})
    assert elsewhere.status_code == 404 and elsewhere.headers["x-request-id"] == "s-404"
    replaced = []
    for bad in MALFORMED:
        answer = raw_get(ports.metrics, "/metrics", bad, token)
        assert answer["status"] == "200", (bad, answer)
        assert NEW_ID.fullmatch(answer["x-request-id"]), (bad, answer)
        replaced.append(answer["x-request-id"])

    (scrape,) = events(ports.log, lambda e: e["auditID"] == "s-1", 1)
    assert scrape["requestURI"] == "/metrics" and scrape["verb"] == "get"
    assert scrape["user"]["username"] == "system:admin"
    assert scrape["responseStatus"]["code"] == 200
    assert scrape["annotations"]["authorization.k8s.io/decision"] == "allow"
    (anonymous,) = events(ports.log, lambda e: e["auditID"] == "s-anon", 1)
    assert anonymous["responseStatus"]["code"] == 403
    assert anonymous["annotations"]["authorization.k8s.io/decision"] == "forbid"
    found = events(ports.log, lambda e: e["auditID"] in replaced, len(replaced))
    assert sorted(e["auditID"] for e in found) == sorted(replaced)
