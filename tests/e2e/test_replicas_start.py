"""Replicas started at the same moment on an empty PostgreSQL database: exactly one of
them creates the shared state (they prepare the database one at a time), so both end up
with the same CA and the same cluster-admin token, and either kubeconfig works on both."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.postgres import create_database
from tests.support.server import RegistryProcess


def test_replicas_started_together_share_one_ca_and_one_admin_token(
    postgres_server: str, tmp_path: Path
) -> None:
    database = create_database(postgres_server, "replicas_together")
    replicas = [
        RegistryProcess(
            data_dir=tmp_path / name,
            database=database,
            extra_args=["--storage", str(tmp_path / "shared-blobs")],
        )
        for name in ("a", "b", "c")
    ]
    failures: list[BaseException] = []

    def start(replica: RegistryProcess) -> None:
        try:
            replica.start(timeout=180)
        except BaseException as exc:  # reported below, with the others stopped
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        if failures:
            pytest.fail(f"a replica did not start: {failures[0]}")
        configs = [yaml.safe_load(r.kubeconfig.read_text()) for r in replicas]
        assert len({c["users"][0]["user"]["token"] for c in configs}) == 1
        assert len({r.ca_file.read_bytes() for r in replicas}) == 1
        for replica in replicas:
            for server in replicas:
                # Each kubeconfig's CA and token against every replica, as kubectl would.
                with server.client(replica.admin_token) as client:
                    assert client.get("/api/v1/namespaces").status_code == 200
                with httpx.Client(
                    verify=ssl.create_default_context(cafile=replica.ca_file)
                ) as plain:
                    assert plain.get(f"{server.url}/healthz").status_code == 200
    finally:
        for replica in replicas:
            replica.stop()
