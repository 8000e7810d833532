"""Readiness, liveness and graceful termination, as a Kubernetes kubelet sees them.

`/readyz` runs a real query against the database and a real operation against the blob
store and answers 503 naming the one that failed; `/livez` (and `/healthz`) only say the
process answers, so a database outage takes the pod out of its Service without the kubelet
restarting it in a loop. On SIGTERM `/readyz` fails at once while the server keeps serving
for `shutdown_delay_seconds`; then it accepts no new connection and an upload in flight
still finishes with 201.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import PostgresCluster, postgres_cluster
from tests.support.server import RegistryProcess

REPO = "team-a/drain"
CHUNK = 256 * 1024
CHUNKS = 64  # 16 MiB


def test_readyz_fails_while_the_database_is_down_and_livez_does_not(tmp_path: Path) -> None:
    with (
        postgres_cluster() as cluster,
        RegistryProcess(data_dir=tmp_path / "data", database=cluster.url) as server,
        server.client(timeout=30) as client,
    ):
        assert client.get("/readyz").status_code == 200
        cluster.stop()
        down = client.get("/readyz")
        assert down.status_code == 503, down.text
        assert down.text.startswith("database: "), down.text
        assert "blob store" not in down.text
        assert client.get("/livez").status_code == 200
        assert client.get("/healthz").status_code == 200
        cluster.start()
        assert client.get("/readyz").status_code == 200


def postgres_processes(cluster: PostgresCluster) -> list[int]:
    """The postmaster and its children (the backends holding the server's connections)."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


def test_readyz_answers_503_when_the_database_hangs(tmp_path: Path) -> None:
    """A database that stops answering (a dead host, a partition: here, stopped processes)
    makes /readyz answer 503 after its own timeout instead of hanging the probe, and probes
    meanwhile do not pile up more stuck checks."""
    with (
        postgres_cluster() as cluster,
        RegistryProcess(data_dir=tmp_path / "data", database=cluster.url) as server,
        server.client(timeout=60) as client,
    ):
        assert client.get("/readyz").status_code == 200
        stopped = postgres_processes(cluster)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            hung = client.get("/readyz")
            assert hung.status_code == 503, hung.text
            assert hung.text == "database: no answer within 2 s\n"
            again = client.get("/readyz")
            assert again.status_code == 503, again.text
            assert again.text == "database: the previous check has not answered yet\n"
            assert client.get("/livez").status_code == 200
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        while (ready := client.get("/readyz")).status_code != 200:
            assert "database" in ready.text  # the stuck check finishes, then one succeeds


def test_readyz_fails_while_the_blob_store_is_gone(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    extra = ["--storage", str(blobs)]
    with (
        RegistryProcess(data_dir=tmp_path / "data", extra_args=extra) as server,
        server.client(server.admin_token, timeout=30) as client,
    ):
        started = client.post(f"/v2/{REPO}/blobs/uploads/")  # the store's directory exists
        assert started.status_code == 202, started.text
        assert client.get("/readyz").status_code == 200
        blobs.rename(tmp_path / "elsewhere")
        blobs.write_text("not a directory")  # the volume is broken
        down = client.get("/readyz")
        assert down.status_code == 503, down.text
        assert down.text.startswith("blob store: "), down.text
        assert client.get("/livez").status_code == 200
        blobs.unlink()
        (tmp_path / "elsewhere").rename(blobs)
        assert client.get("/readyz").status_code == 200


class SlowBody:
    """A request body sent chunk by chunk: the first chunk at once, the rest only after
    `release` (so the test decides when the upload may finish)."""

    def __init__(self) -> None:
        self.first_sent = threading.Event()
        self.release = threading.Event()
        self.data = bytes(range(256)) * (CHUNK // 256)

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        self.first_sent.set()
        if not self.release.wait(120):
            raise RuntimeError("never released")
        for _ in range(CHUNKS - 1):
            yield self.data

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data * CHUNKS).hexdigest()


def refuses_connections(port: int) -> bool:
    """True once a connect is refused outright. A connect that races the listener's close
    can be reset instead (it reached the backlog of a socket being closed); that is neither
    served nor yet refused, so the caller asks again."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False


def test_sigterm_lets_an_upload_in_flight_finish_and_refuses_new_connections(
    tmp_path: Path,
) -> None:
    server = RegistryProcess(
        data_dir=tmp_path / "data", env={"IMAGE_REGISTRY_SHUTDOWN_DELAY_SECONDS": "8"}
    ).start()
    token = server.admin_token
    body = SlowBody()
    outcome: dict[str, httpx.Response | BaseException] = {}
    try:
        with server.client(token, timeout=120) as client:
            started = client.post(f"/v2/{REPO}/blobs/uploads/")
            assert started.status_code == 202, started.text
            location = started.headers["location"]

            def upload() -> None:
                try:
                    outcome["put"] = client.put(
                        location, params={"digest": body.digest}, content=iter(body)
                    )
                except BaseException as exc:
                    outcome["put"] = exc

            uploader = threading.Thread(target=upload)
            uploader.start()
            assert body.first_sent.wait(60)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)

            # During the delay: still serving, but no longer ready.
            with server.client(timeout=30) as probe:
                while (ready := probe.get("/readyz")).status_code == 200:
                    pass  # the supervisor has not written the marker yet
                assert ready.status_code == 503
                assert ready.text == "shutting down\n"
                assert probe.get("/livez").status_code == 200

            # Then: new connections are refused while the upload is still in flight.
            while not refuses_connections(server.port):
                pass
            assert uploader.is_alive() and "put" not in outcome
            body.release.set()
            uploader.join(120)
        put = outcome["put"]
        assert isinstance(put, httpx.Response), put
        assert put.status_code == 201, put.text
        assert server.proc.wait(60) == 0
    finally:
        body.release.set()
        server.stop()

    # The blob is stored whole: a server started again on the same data dir serves it.
    with (
        RegistryProcess(data_dir=tmp_path / "data") as again,
        again.client(again.admin_token, timeout=60) as client,
    ):
        head = client.head(f"/v2/{REPO}/blobs/{body.digest}")
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == CHUNK * CHUNKS


def test_sigterm_without_a_delay_stops_at_once(tmp_path: Path) -> None:
    """The default (`shutdown_delay_seconds: 0`) keeps the old behaviour for a server run
    by hand: one SIGTERM and it stops, exit status 0, no marker left behind."""
    server = RegistryProcess(data_dir=tmp_path / "data").start()
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    try:
        assert server.proc.wait(60) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("the server did not stop on SIGTERM")
    finally:
        server.stop()
    assert not list((tmp_path / "data" / "run").glob("draining-*"))
    shutil.rmtree(tmp_path / "data")
