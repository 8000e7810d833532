"""A database that takes no writes: pulls are served, writes answer 503.

Before, a manifest GET recorded its pull time in the same request, so a read-only database
broke every pull with `500`. Now pull times are buffered and written in batches, and a
refused write is `503` with a message saying the database is read-only: the OCI envelope
(`UNAVAILABLE`) on `/v2/`, a Kubernetes `Status` (`ServiceUnavailable`) on the API. The
server says so at start-up.

Each case fills a real server's database, restarts the server on the same data dir with
the database read-only and replays what users do: SQLite opened read-only (`mode=ro`; a
`chmod` would not stop the root user these tests may run as), and a real PostgreSQL with
`ALTER DATABASE ... SET default_transaction_read_only = on`, and a real hot standby (a
streaming replica made with `pg_basebackup -R`).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from tests.e2e.oci_support import OCI_MANIFEST, image_manifest, sha
from tests.support.postgres import create_database, hot_standby, postgres_cluster
from tests.support.server import RegistryProcess

REPO = "team-a/app"
NOTICE = "The database is read-only"


def push(client: httpx.Client, tag: str) -> tuple[str, bytes, bytes]:
    """Push a one-layer image; its manifest digest, config and layer."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    layer = f"layer of {tag}".encode()
    for data in (config, layer):
        started = client.post(f"/v2/{REPO}/blobs/uploads/")
        started.raise_for_status()
        done = client.put(started.headers["location"], params={"digest": sha(data)}, content=data)
        done.raise_for_status()
    manifest = image_manifest(config, [layer])
    client.put(
        f"/v2/{REPO}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    ).raise_for_status()
    return sha(manifest), config, layer


def assert_read_only_error(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    assert "read-only" in error["message"]


def check_read_only_server(server: RegistryProcess, digest: str, layer: bytes) -> None:
    with server.client(server.admin_token) as client:
        for _ in range(3):  # pulls by tag and digest, again and again
            by_tag = client.get(f"/v2/{REPO}/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert by_tag.status_code == 200, by_tag.text
            assert sha(by_tag.content) == digest
            by_digest = client.get(f"/v2/{REPO}/manifests/{digest}")
            assert by_digest.status_code == 200, by_digest.text
        blob = client.get(f"/v2/{REPO}/blobs/{sha(layer)}", follow_redirects=True)
        assert blob.status_code == 200 and blob.content == layer
        assert client.get(f"/v2/{REPO}/tags/list").json()["tags"] == ["v1"]
        listed = client.get("/apis/image.alauda.io/v1/namespaces/team-a/imagestreams")
        assert listed.status_code == 200, listed.text

        # Writes: the upload, the manifest and the API each say why, with nothing stored.
        assert_read_only_error(client.post(f"/v2/{REPO}/blobs/uploads/"))
        manifest = client.get(f"/v2/{REPO}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert_read_only_error(  # tagging the stored image anew
            client.put(
                f"/v2/{REPO}/manifests/v2",
                content=manifest.content,
                headers={"Content-Type": OCI_MANIFEST},
            )
        )
        assert_read_only_error(client.delete(f"/v2/{REPO}/manifests/v1"))
        created = client.post(
            "/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}},
        )
        assert created.status_code == 503, created.text
        status = created.json()
        assert status["kind"] == "Status" and status["reason"] == "ServiceUnavailable"
        assert "read-only" in status["message"]
        assert client.get(f"/v2/{REPO}/tags/list").json()["tags"] == ["v1"]
        assert client.get("/api/v1/namespaces/team-b").status_code == 404
    log = server.log_text()
    assert NOTICE in log  # said at start-up
    assert "Traceback" not in log


def run_case(data_dir: Path, database: str | None, make_read_only: Callable[[], str]) -> None:
    writable = RegistryProcess(data_dir, plain_http=True, database=database).start()
    try:
        with writable.client(writable.admin_token) as client:
            digest, _config, layer = push(client, "v1")
    finally:
        writable.stop()
    read_only_url = make_read_only()
    server = RegistryProcess(data_dir, plain_http=True, database=read_only_url).start()
    try:
        check_read_only_server(server, digest, layer)
    finally:
        server.stop()
    assert server.proc is not None and server.proc.returncode == 0  # the last flush too


def test_sqlite_opened_read_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    database = data_dir / "registry.db"
    run_case(data_dir, None, lambda: f"sqlite:///file:{database}?mode=ro&uri=true")


def test_postgres_default_transaction_read_only(postgres_server: str, tmp_path: Path) -> None:
    name = f"ro_{uuid.uuid4().hex[:10]}"
    url = create_database(postgres_server, name)

    def make_read_only() -> str:
        admin = postgres_server.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        return url

    run_case(tmp_path / "data", url, make_read_only)


def test_postgres_hot_standby(tmp_path: Path) -> None:
    with postgres_cluster() as primary:
        url = create_database(primary.url, f"hs_{uuid.uuid4().hex[:10]}")
        name = url.rsplit("/", 1)[1]
        with contextlib.ExitStack() as stack:

            def make_read_only() -> str:  # a replica of what the writable server stored
                standby = stack.enter_context(hot_standby(primary))
                return standby.url.rsplit("/", 1)[0] + "/" + name

            run_case(tmp_path / "data", url, make_read_only)
