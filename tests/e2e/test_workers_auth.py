"""Revocation across workers: a service account deleted through one worker stops its
tokens on every worker at once (the identity epoch in the data dir), not after the
per-process authentication cache's 5 s."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import RegistryProcess

SSR = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
ACCOUNTS = "/api/v1/namespaces/revoke/serviceaccounts"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = tmp_path_factory.mktemp("workers-auth")
    with RegistryProcess(data_dir=root / "data", extra_args=["--workers", "2"]) as process:
        yield process


def status_on_new_connections(server: RegistryProcess, token: str, times: int) -> set[int]:
    """Each request on a connection of its own, so the kernel hands them to both workers."""
    seen = set()
    for _ in range(times):
        with server.client(token) as client:
            reply = client.post(SSR, json={"apiVersion": "authentication.k8s.io/v1"})
            seen.add(reply.status_code)
    return seen


def test_a_deleted_accounts_token_stops_on_every_worker_at_once(server: RegistryProcess) -> None:
    assert len(server.worker_pids()) == 2
    with server.client(server.admin_token) as admin:
        namespace = {"metadata": {"name": "revoke"}}
        assert admin.post("/api/v1/namespaces", json=namespace).status_code == 201
        assert admin.post(ACCOUNTS, json={"metadata": {"name": "bot"}}).status_code == 201
        reply = admin.post(f"{ACCOUNTS}/bot/token", json={"spec": {}})
        assert reply.status_code == 201, reply.text
        token = reply.json()["status"]["token"]
        assert status_on_new_connections(server, token, 16) == {201}  # now cached by both
        assert admin.delete(f"{ACCOUNTS}/bot").status_code == 200
    assert status_on_new_connections(server, token, 16) == {401}
