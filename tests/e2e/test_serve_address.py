"""A second `serve` on an address a registry already serves is refused.

Granian listens with SO_REUSEPORT, so before the check a second server with another data
dir started on the same `--listen` and silently took a share of the connections."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx

from tests.support.server import BIN, RegistryProcess

REQUESTS = 60


def test_second_server_on_the_same_address_is_refused(tmp_path: Path) -> None:
    with RegistryProcess(tmp_path / "first", plain_http=True) as first:
        argv = [str(BIN / "image-registry"), "serve", "--plain-http", "--listen", first.host]
        second = subprocess.Popen(
            [*argv, "--data-dir", str(tmp_path / "second")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, err = second.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(second.pid, signal.SIGKILL)
            second.communicate()
            raise AssertionError("the second server started on an address already served") from None
        assert second.returncode != 0
        assert f"listen {first.host}: Address already in use" in err
        assert "another registry" in err
        assert "Traceback" not in err
        # Refused before anything was prepared, so no worker ever started.
        assert not (tmp_path / "second").exists()

        # The first server still answers every connection: its admin token works on each.
        token = first.admin_token
        for _ in range(REQUESTS):
            with httpx.Client(
                base_url=first.url, headers={"Authorization": f"Bearer {token}"}
            ) as client:  # a new connection per request
                assert client.get("/v2/").status_code == 200


def test_the_test_harness_moves_to_another_port_when_its_port_was_taken(tmp_path: Path) -> None:
    """Tests run in parallel: a port handed out by `free_port` may be taken by another test's
    process before the server binds it. The harness then starts the server on a new port
    instead of failing the test (the server itself still refuses the busy address)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with RegistryProcess(tmp_path / "data", plain_http=True, port=busy) as server:
            assert server.port != busy
            assert httpx.get(f"{server.url}/healthz").status_code == 200
        log = (tmp_path / f"server-{busy}.log").read_text()
        assert f"listen 127.0.0.1:{busy}: Address already in use" in log
