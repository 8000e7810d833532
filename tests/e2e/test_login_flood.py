"""A flood of Basic-auth requests with made-up credentials (each would cost a bcrypt) is
throttled per source address: beyond `failed_logins_per_minute` failed password checks the
answer is `429` with `Retry-After`, on the registry, the token endpoint and the API alike,
while token holders keep being served. Its own server: the flood spends 127.0.0.1's budget."""

from __future__ import annotations

import base64
import math
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import bcrypt
import httpx
import pytest

from tests.support.server import RegistryProcess

BUDGET = 5  # failed checks per minute per source


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = tmp_path_factory.mktemp("login-flood")
    hashed = bcrypt.hashpw(b"alice-password", bcrypt.gensalt(rounds=10)).decode()
    (root / "htpasswd").write_text(f"alice:{hashed}\n")
    with RegistryProcess(
        data_dir=root / "data",
        extra_args=["--htpasswd-file", str(root / "htpasswd")],
        env={"IMAGE_REGISTRY_FAILED_LOGINS_PER_MINUTE": str(BUDGET)},
    ) as process:
        yield process


def _basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def test_a_basic_auth_flood_is_throttled_and_token_holders_are_served(
    server: RegistryProcess,
) -> None:
    admin = server.client(server.admin_token, timeout=60.0)
    assert admin.post("/api/v1/namespaces", json={"metadata": {"name": "flood"}}).status_code == 201
    started = time.monotonic()

    def attack(n: int) -> httpx.Response:
        with server.client(timeout=60.0) as client:
            return client.get("/v2/flood/app/tags/list", headers=_basic(f"x{n}", "guess"))

    def legit(_n: int) -> int:
        return admin.get("/v2/flood/app/tags/list").status_code

    with ThreadPoolExecutor(32) as pool:
        flood = pool.map(attack, range(200))
        served = list(pool.map(legit, range(50)))
        answers = list(flood)
    elapsed = time.monotonic() - started
    codes = Counter(r.status_code for r in answers)
    # Only the budget (plus what refilled while the flood ran) reached bcrypt: 401s.
    assert set(codes) <= {401, 429}, codes
    assert codes[401] <= BUDGET + math.ceil(elapsed * BUDGET / 60) + 1, codes
    throttled = next(r for r in answers if r.status_code == 429)
    assert throttled.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert int(throttled.headers["Retry-After"]) >= 1
    assert "guess" not in throttled.text
    # The bearer client was answered throughout (404: the stream does not exist).
    assert set(served) == {404}, Counter(served)
    admin.close()

    # Every surface says the same while the budget is spent, even for a right password:
    # a remembered check is the only way past, and this one was never made.
    with server.client() as client:
        registry = client.get("/v2/", headers=_basic("alice", "alice-password"))
        token = client.get("/v2/token", headers=_basic("nobody", "guess"))
        api = client.get("/api/v1/namespaces", headers=_basic("nobody", "guess"))
    assert registry.status_code == 429 and "Retry-After" in registry.headers
    assert token.status_code == 429 and token.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert api.status_code == 429, api.text
    assert api.json()["reason"] == "TooManyRequests"
    assert api.json()["details"]["retryAfterSeconds"] >= 1
    assert int(api.headers["Retry-After"]) >= 1


def test_token_holders_using_basic_are_not_throttled(server: RegistryProcess) -> None:
    """docker/podman/containerd send a token as the Basic password (`login -p $(ac whoami
    -t)`): it is a token, never a password check, so the spent budget does not apply."""
    with server.client() as client:
        for _ in range(3):
            reply = client.get("/v2/", headers=_basic("anyone", server.admin_token))
            assert reply.status_code == 200, reply.text
        wrong = client.get("/v2/", headers=_basic("anyone", secrets.token_urlsafe(16)))
    assert wrong.status_code == 429  # not a token, so a password check: still throttled
