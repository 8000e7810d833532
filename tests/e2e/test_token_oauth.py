"""The token endpoint's OAuth2 form (`POST /v2/token`) against a running plain-HTTP server.

containerd (and so the kubelet) asks for tokens this way whenever it holds credentials;
these tests pin the protocol itself with httpx: the password and refresh-token grants,
`access_type=offline`, errors in RFC 6749's shape, and that presented credentials never
turn into an anonymous token. One server per module, with an htpasswd file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from tests.support.server import RegistryProcess

PASSWORD = "ctr-Pa55-wörd"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
TOKEN_REQUEST = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}


def _htpasswd(*users: str) -> str:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    return "".join(f"{user}:{hashed}\n" for user in users)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = tmp_path_factory.mktemp("token-oauth")
    (root / "htpasswd").write_text(_htpasswd("alice", "carol"))
    with RegistryProcess(
        data_dir=root / "data",
        plain_http=True,
        extra_args=["--htpasswd-file", str(root / "htpasswd")],
    ) as process:
        with process.client(process.admin_token) as admin:
            for ns in ("ot-a", "ot-b"):
                reply = admin.post("/api/v1/namespaces", json={"metadata": {"name": ns}})
                assert reply.status_code == 201, reply.text
            _bind(admin, "ot-a", {"kind": "User", "name": "alice"}, "system:image-puller")
            _bind(admin, "ot-a", {"kind": "User", "name": "carol"}, "system:image-puller")
        yield process


def _bind(admin: httpx.Client, ns: str, subject: dict[str, str], role: str) -> None:
    if subject["kind"] != "ServiceAccount":
        subject = {**subject, "apiGroup": "rbac.authorization.k8s.io"}
    body = {
        "metadata": {"name": f"{subject['name']}-{role.replace(':', '-')}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [subject],
    }
    reply = admin.post(f"{RBAC}/namespaces/{ns}/rolebindings", json=body)
    assert reply.status_code == 201, reply.text


def _post(server: RegistryProcess, **form: str) -> httpx.Response:
    fields = {"service": "imageregistry", "client_id": "tests", **form}
    with server.client() as client:
        return client.post("/v2/token", data=fields)


def _claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _status(server: RegistryProcess, token: str, path: str = "/v2/ot-a/app/tags/list") -> int:
    with server.client(token) as client:
        return client.get(path).status_code


def test_password_grant_answers_a_token_for_the_user_with_the_granted_scope(
    server: RegistryProcess,
) -> None:
    scope = "repository:ot-a/app:pull,push repository:ot-b/app:pull registry:catalog:*"
    reply = _post(server, grant_type="password", username="alice", password=PASSWORD, scope=scope)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["access_token"] == body["token"]
    assert _claims(body["token"])["sub"] == "alice"
    assert body["expires_in"] >= 60 and body["issued_at"].endswith("Z")
    # The OAuth2 form requires the granted scope: alice may pull ot-a/app, nothing else.
    assert body["scope"] == "repository:ot-a/app:pull"
    assert "refresh_token" not in body  # online access by default
    assert reply.headers["cache-control"] == "no-store"
    # Authorized for pull (the stream does not exist yet), refused elsewhere.
    assert _status(server, body["token"]) == 404
    assert _status(server, body["token"], "/v2/ot-b/app/tags/list") == 403


def test_a_token_as_the_password_is_handed_back(server: RegistryProcess) -> None:
    reply = _post(server, grant_type="password", username="x", password=server.admin_token)
    assert reply.status_code == 200, reply.text
    assert reply.json()["access_token"] == server.admin_token


def test_presented_credentials_never_become_an_anonymous_token(server: RegistryProcess) -> None:
    for username, password in (("alice", "wrong"), ("nobody", PASSWORD), ("x", "ir_forged")):
        reply = _post(server, grant_type="password", username=username, password=password)
        assert reply.status_code == 401, (username, reply.text)
        body = reply.json()
        assert body["error"] == "invalid_grant"
        assert body["errors"][0]["code"] == "UNAUTHORIZED"
        assert "token" not in body and "access_token" not in body
        assert reply.headers["www-authenticate"].startswith("Bearer realm=")
    reply = _post(server, grant_type="refresh_token", refresh_token="irr_not-issued-here")
    assert reply.status_code == 401 and reply.json()["error"] == "invalid_grant"
    reply = _post(server, grant_type="refresh_token", refresh_token="not.a.jwt")
    assert reply.status_code == 401 and reply.json()["error"] == "invalid_grant"
    # GET with Basic: the same rule.
    basic = "Basic " + base64.b64encode(b"alice:wrong").decode()
    with server.client() as client:
        assert client.get("/v2/token", headers={"Authorization": basic}).status_code == 401


def test_malformed_requests_are_400_with_an_oauth2_error(server: RegistryProcess) -> None:
    reply = _post(server, grant_type="client_credentials")
    assert reply.status_code == 400 and reply.json()["error"] == "unsupported_grant_type"
    reply = _post(server, grant_type="authorization_code", code="x")
    assert reply.status_code == 400 and reply.json()["error"] == "unsupported_grant_type"
    for form in (
        {},
        {"grant_type": "password", "username": "alice"},
        {"grant_type": "refresh_token"},
        {"grant_type": "password", "username": "alice", "password": PASSWORD, "access_type": "x"},
    ):
        reply = _post(server, **form)
        assert reply.status_code == 400, form
        assert reply.json()["error"] == "invalid_request"
    with server.client() as client:
        repeated = "grant_type=password&grant_type=refresh_token&username=a&password=b"
        reply = client.post(
            "/v2/token",
            content=repeated,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert reply.status_code == 400 and reply.json()["error"] == "invalid_request"
        reply = client.post("/v2/token", json={"grant_type": "password"})
        assert reply.status_code == 400 and reply.json()["error"] == "invalid_request"
        # The form is read with a limit: a huge body is refused, not buffered.
        huge = "grant_type=password&username=alice&password=" + "a" * (1 << 20)
        reply = client.post(
            "/v2/token",
            content=huge,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert reply.status_code == 413 and reply.json()["error"] == "invalid_request"


def _refresh_rows(server: RegistryProcess) -> list[tuple[str, str]]:
    with sqlite3.connect(server.data_dir / "registry.db") as conn:
        return list(conn.execute("SELECT token_sha256, username FROM refresh_tokens"))


def test_offline_access_returns_a_refresh_token_stored_only_hashed(
    server: RegistryProcess,
) -> None:
    reply = _post(
        server, grant_type="password", username="alice", password=PASSWORD, access_type="offline"
    )
    assert reply.status_code == 200, reply.text
    refresh = reply.json()["refresh_token"]
    assert refresh.startswith("irr_")
    digest = hashlib.sha256(refresh.encode()).hexdigest()
    rows = _refresh_rows(server)
    assert (digest, "alice") in rows
    assert not any(refresh in row for row in rows)
    again = _post(
        server,
        grant_type="refresh_token",
        refresh_token=refresh,
        scope="repository:ot-a/app:pull",
        access_type="offline",
    )
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["refresh_token"] == refresh  # the same one, not a new one
    assert body["scope"] == "repository:ot-a/app:pull"
    assert _claims(body["access_token"])["sub"] == "alice"
    assert _status(server, body["access_token"]) == 404
    # A refresh token is for the token endpoint only, never a Bearer or Basic credential.
    assert _status(server, refresh) == 401
    with server.client() as client:
        basic = "Basic " + base64.b64encode(f"alice:{refresh}".encode()).decode()
        assert client.get("/v2/", headers={"Authorization": basic}).status_code == 401
    # GET with `offline_token=true` (docker's login) hands out one too.
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    with server.client() as client:
        got = client.get(
            "/v2/token", params={"offline_token": "true"}, headers={"Authorization": basic}
        )
    assert got.status_code == 200 and got.json()["refresh_token"].startswith("irr_")


def test_a_removed_users_refresh_token_stops_working(server: RegistryProcess) -> None:
    reply = _post(
        server, grant_type="password", username="carol", password=PASSWORD, access_type="offline"
    )
    assert reply.status_code == 200, reply.text
    refresh = reply.json()["refresh_token"]
    assert _post(server, grant_type="refresh_token", refresh_token=refresh).status_code == 200
    htpasswd = Path(server.data_dir.parent / "htpasswd")
    htpasswd.write_text(_htpasswd("alice"))  # carol removed
    # The server re-reads the file within a second; wait for that, not a fixed time.
    deadline = time.monotonic() + 30
    status = 200
    while status == 200 and time.monotonic() < deadline:
        status = _post(server, grant_type="refresh_token", refresh_token=refresh).status_code
        if status == 200:
            time.sleep(0.2)
    assert status == 401
    htpasswd.write_text(_htpasswd("alice", "carol"))


def test_a_deleted_service_accounts_refresh_token_stops_working(server: RegistryProcess) -> None:
    accounts = "/api/v1/namespaces/ot-a/serviceaccounts"
    with server.client(server.admin_token) as admin:
        assert admin.post(accounts, json={"metadata": {"name": "bot"}}).status_code == 201
        _bind(
            admin,
            "ot-a",
            {"kind": "ServiceAccount", "name": "bot", "namespace": "ot-a"},
            "system:image-puller",
        )
        minted = admin.post(f"{accounts}/bot/token", json=TOKEN_REQUEST)
        assert minted.status_code == 201, minted.text
        sa_token = minted.json()["status"]["token"]
        reply = _post(
            server, grant_type="password", username="bot", password=sa_token, access_type="offline"
        )
        assert reply.status_code == 200, reply.text
        refresh = reply.json()["refresh_token"]
        # The refresh token never outlives the token it was made from.
        refreshed = _post(server, grant_type="refresh_token", refresh_token=refresh)
        assert refreshed.status_code == 200, refreshed.text
        access = refreshed.json()["access_token"]
        assert _claims(access)["sub"] == "system:serviceaccount:ot-a:bot"
        assert _claims(access)["exp"] <= _claims(sa_token)["exp"]
        assert _status(server, access) == 404
        # containerd sends a kubelet secret's identitytoken as a refresh token.
        as_identity = _post(server, grant_type="refresh_token", refresh_token=sa_token)
        assert as_identity.status_code == 200 and as_identity.json()["access_token"] == sa_token
        assert admin.delete(f"{accounts}/bot").status_code == 200
        assert admin.post(accounts, json={"metadata": {"name": "bot"}}).status_code == 201
    # Deleted (and re-created: another uid): the refresh token is dead.
    reply = _post(server, grant_type="refresh_token", refresh_token=refresh)
    assert reply.status_code == 401 and reply.json()["error"] == "invalid_grant"
    assert _status(server, access) == 401


def test_failed_password_grants_are_throttled(tmp_path: Path) -> None:
    (tmp_path / "htpasswd").write_text(_htpasswd("alice"))
    with RegistryProcess(
        data_dir=tmp_path / "data",
        plain_http=True,
        extra_args=["--htpasswd-file", str(tmp_path / "htpasswd")],
        env={"IMAGE_REGISTRY_FAILED_LOGINS_PER_MINUTE": "2"},
    ) as throttled:
        statuses = []
        for _ in range(4):
            reply = _post(throttled, grant_type="password", username="alice", password="guess")
            statuses.append(reply.status_code)
            if reply.status_code == 429:
                break
        assert statuses[0] == 401 and statuses[-1] == 429, statuses
        assert reply.json()["error"] == "temporarily_unavailable"
        assert reply.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert int(reply.headers["retry-after"]) > 0
