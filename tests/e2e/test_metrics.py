"""`/metrics` with real consumers: Debian's `prometheus` scrapes a 2-worker server over
TLS with a service account's token during a skopeo push and pull, and `promtool` lints a
scrape. The figures Prometheus holds must equal what the test sent, whichever worker
answered each request; scrapes without the `system:monitoring` binding are refused; and
when Granian replaces a killed worker, that worker's live gauges leave the sum."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.oci_support import Layout, assert_copied, build_layout, skopeo
from tests.support.prometheus import PROMTOOL, PrometheusProcess, ScrapeJob
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.timeout(600)

ACCOUNTS = "/api/v1/namespaces/monitoring/serviceaccounts"
BINDINGS = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
REQUESTS = "imageregistry_http_requests_total"
MANIFEST_ROUTE = "/v2/{name}/manifests/{reference}"
UPLOAD_ROUTE = "/v2/{name}/blobs/uploads/{uuid}"
BLOB_ROUTE = "/v2/{name}/blobs/{digest}"


def account_token(admin: httpx.Client, name: str) -> str:
    assert admin.post(ACCOUNTS, json={"metadata": {"name": name}}).status_code == 201
    reply = admin.post(f"{ACCOUNTS}/{name}/token", json={"spec": {}})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["status"]["token"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = tmp_path_factory.mktemp("metrics")
    with RegistryProcess(data_dir=root / "data", extra_args=["--workers", "2"]) as process:
        with process.client(process.admin_token) as admin:
            namespace = {"metadata": {"name": "monitoring"}}
            assert admin.post("/api/v1/namespaces", json=namespace).status_code == 201
        yield process


@pytest.fixture(scope="module")
def scraper_token(server: RegistryProcess) -> str:
    """A service account bound to the bootstrap ClusterRole `system:monitoring`."""
    with server.client(server.admin_token) as admin:
        token = account_token(admin, "prometheus")
        binding = {
            "metadata": {"name": "prometheus-metrics"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:monitoring",
            },
            "subjects": [
                {"kind": "ServiceAccount", "namespace": "monitoring", "name": "prometheus"}
            ],
        }
        assert admin.post(BINDINGS, json=binding).status_code == 201
    return token


@pytest.fixture(scope="module")
def prometheus(
    server: RegistryProcess, scraper_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusProcess]:
    root = tmp_path_factory.mktemp("prometheus")
    token_file = root / "token"
    token_file.write_text(scraper_token)
    jobs = [
        ScrapeJob("registry", server.host, ca_file=server.ca_file, token_file=token_file),
        ScrapeJob("registry-anonymous", server.host, ca_file=server.ca_file),
    ]
    with PrometheusProcess(root / "run", jobs) as process:
        yield process


def total(prom: PrometheusProcess, selector: str) -> str:
    return f"sum({REQUESTS}{{job='registry',{selector}}}) or vector(0)"


def test_prometheus_sees_the_push_and_pull_it_was_sent(
    server: RegistryProcess, prometheus: PrometheusProcess, tmp_path: Path
) -> None:
    up = prometheus.wait_for("up{job='registry'}", lambda v: v == 1)
    assert up == 1, "Prometheus cannot scrape the registry with the bound token"
    assert len(server.worker_pids()) == 2

    layout: Layout = build_layout(tmp_path / "layout", "metrics")
    certs = str(server.cert_dir(tmp_path))
    pushed = skopeo(
        "copy",
        "--dest-cert-dir",
        certs,
        "--dest-registry-token",
        server.admin_token,
        f"oci:{layout.path}:v1",
        f"docker://{server.host}/team/app:v1",
    )
    assert pushed.returncode == 0, pushed.stderr
    blobs = len(layout.blobs) - 1  # the manifest is not a blob upload
    put_manifest = total(prometheus, f"route='{MANIFEST_ROUTE}',method='PUT',code='201'")
    assert prometheus.wait_for(put_manifest, lambda v: v == 1) == 1
    uploads = total(prometheus, f"route='{UPLOAD_ROUTE}',method='PUT',code='201'")
    assert prometheus.wait_for(uploads, lambda v: v == blobs) == blobs

    out = tmp_path / "pulled"
    pulled = skopeo(
        "copy",
        "--src-cert-dir",
        certs,
        "--src-registry-token",
        server.admin_token,
        f"docker://{server.host}/team/app:v1",
        f"oci:{out}:v1",
    )
    assert pulled.returncode == 0, pulled.stderr
    assert_copied(out, layout)
    blob_gets = total(prometheus, f"route='{BLOB_ROUTE}',method='GET',code='200'")
    assert prometheus.wait_for(blob_gets, lambda v: v == blobs) == blobs

    # Requests on connections of their own are spread over both workers by the kernel;
    # the sum Prometheus sees must still be exact.
    # skopeo's own /v2/ pings may still be in a worker's unflushed counters: wait them out.
    before = prometheus.settled(total(prometheus, "route='/v2/'"))
    assert before is not None
    for _ in range(20):
        with server.client(server.admin_token) as client:
            assert client.get("/v2/").status_code == 200
    after = prometheus.wait_for(
        total(prometheus, "route='/v2/'"), lambda v: v is not None and v >= before + 20
    )
    assert after == before + 20
    # No label holds a repository name, tag or digest.
    for series in prometheus.query(f"{REQUESTS}{{job='registry'}}"):
        assert "team" not in series["metric"]["route"], series


def test_a_scrape_without_the_binding_is_refused(
    server: RegistryProcess, prometheus: PrometheusProcess
) -> None:
    assert prometheus.wait_for("up{job='registry-anonymous'}", lambda v: v is not None) == 0
    with server.client() as anonymous:
        reply = anonymous.get("/metrics")
        assert reply.status_code == 403
        assert "system:anonymous" in reply.json()["message"]
    with server.client(server.admin_token) as admin:
        unbound = account_token(admin, "unbound")
    with server.client(unbound) as client:
        assert client.get("/metrics").status_code == 403
    with server.client("not-a-token") as client:
        assert client.get("/metrics").status_code == 401


def test_promtool_finds_the_scrape_clean(server: RegistryProcess, scraper_token: str) -> None:
    with server.client(scraper_token) as client:
        reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    lint = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=reply.content, capture_output=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout.strip() == b"" and lint.stderr.strip() == b"", lint


def gauge(server: RegistryProcess, token: str, name: str) -> float:
    with server.client(token) as client:
        text = client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing from the scrape")


def test_a_killed_workers_uploads_leave_the_gauge(
    server: RegistryProcess, scraper_token: str
) -> None:
    """An upload held open counts as in progress; SIGKILL both workers (the upload dies
    with them), Granian respawns them, and the dead workers' share is gone."""
    with server.client(server.admin_token) as admin:
        start = admin.post("/v2/team/held/blobs/uploads/")
        assert start.status_code == 202, start.text
        location = start.headers["location"]
    release = threading.Event()

    def body() -> Iterator[bytes]:
        yield b"x" * 1024
        release.wait(120)

    def send() -> None:
        # the worker serving it is killed: the request fails
        with (
            server.client(server.admin_token, timeout=120) as client,
            contextlib.suppress(httpx.HTTPError),
        ):
            client.patch(
                location, content=body(), headers={"Content-Type": "application/octet-stream"}
            )

    sender = threading.Thread(target=send)
    sender.start()
    try:
        name = "imageregistry_uploads_in_progress"
        deadline = time.monotonic() + 60
        while gauge(server, scraper_token, name) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert gauge(server, scraper_token, name) == 1
        old = set(server.worker_pids())
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            current = set(server.worker_pids())
            if len(current) == 2 and not current & old:
                try:
                    if gauge(server, scraper_token, name) is not None:
                        break
                except (httpx.HTTPError, AssertionError):
                    pass
            time.sleep(0.2)
        assert len(set(server.worker_pids()) - old) == 2
        assert gauge(server, scraper_token, name) == 0
    finally:
        release.set()
        sender.join(60)
