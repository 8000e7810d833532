"""Security review of authentication, tokens and RBAC against a running server.

One server per module, started with an htpasswd file and debug logging, so the last test
can check that no password or token ever reached the log. Each test pins one rule of the
project guide: deny by default, tokens never widen to a requested scope or repository,
forged or expired tokens are refused, service-account tokens die with their account, and
RBAC objects (aggregation, `bind`) cannot be used to gain permissions one does not hold.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bcrypt
import httpx
import pytest

from imageregistry.auth.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, TokenSigner
from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import open_engine
from imageregistry.metadata.tokens import get_or_create_secret
from tests.e2e.kubectl_support import add_user_token
from tests.support.server import RegistryProcess

PASSWORD = "Pa55-wörd-only-in-htpasswd"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
SSR = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
TOKEN_REQUEST = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
SECRETS: list[str] = [PASSWORD]  # everything the log test looks for


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    root = tmp_path_factory.mktemp("auth-security")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (root / "htpasswd").write_text(f"alice:{hashed}\n")
    with RegistryProcess(
        data_dir=root / "data",
        extra_args=["--htpasswd-file", str(root / "htpasswd"), "--log-level", "debug"],
        # Many tests here present wrong passwords from 127.0.0.1; the failed-login
        # throttle has its own module (test_login_flood.py).
        env={"IMAGE_REGISTRY_FAILED_LOGINS_PER_MINUTE": "1000"},
    ) as process:
        SECRETS.append(process.admin_token)
        yield process


@pytest.fixture(scope="module")
def admin(server: RegistryProcess) -> Iterator[httpx.Client]:
    with server.client(server.admin_token) as client:
        yield client


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _token(server: RegistryProcess, **headers: str) -> str:
    with server.client() as client:
        reply = client.get("/v2/token", headers=headers, params=_QUERY)
    assert reply.status_code == 200, reply.text
    token = str(reply.json()["token"])
    SECRETS.append(token)
    return token


_QUERY: list[tuple[str, str | int | float | bool | None]] = [
    ("service", "imageregistry"),
    ("scope", "repository:sec-a/app:pull,push,delete"),
    ("scope", "registry:catalog:*"),
    ("account", "system:admin"),
    ("offline_token", "true"),
]


def _claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _user(server: RegistryProcess, token: str) -> str:
    with server.client(token) as client:
        reply = client.post(SSR, json={"apiVersion": "authentication.k8s.io/v1"})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["status"]["userInfo"]["username"])


def _start_upload(server: RegistryProcess, token: str, repo: str) -> int:
    with server.client(token) as client:
        return client.post(f"/v2/{repo}/blobs/uploads/").status_code


def _namespace(admin: httpx.Client, name: str) -> None:
    assert admin.post("/api/v1/namespaces", json={"metadata": {"name": name}}).status_code == 201


def _bind(admin: httpx.Client, ns: str, user: str, role: str) -> None:
    body = {
        "metadata": {"name": f"{user}-{role}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}],
    }
    reply = admin.post(f"{RBAC}/namespaces/{ns}/rolebindings", json=body)
    assert reply.status_code == 201, reply.text


def test_token_endpoint_hands_out_identity_not_the_requested_scope(
    server: RegistryProcess, admin: httpx.Client
) -> None:
    _namespace(admin, "sec-a")
    _namespace(admin, "sec-b")
    token = _token(server, Authorization=_basic("alice", PASSWORD))
    # `account=system:admin` and the scopes asked for change nothing: the token is alice.
    assert _claims(token)["sub"] == "alice"
    assert _user(server, token) == "alice"
    assert _start_upload(server, token, "sec-a/app") == 403
    _bind(admin, "sec-a", "alice", "system:image-pusher")
    assert _start_upload(server, token, "sec-a/app") == 202
    # A token fetched for sec-a/app is no key to another repository.
    assert _start_upload(server, token, "sec-b/app") == 403
    with server.client(token) as client:
        assert client.get("/v2/_catalog").status_code == 403
    anonymous = _token(server)
    assert _claims(anonymous)["sub"] == "system:anonymous"
    assert _start_upload(server, anonymous, "sec-a/app") == 401


def _forged(server: RegistryProcess) -> list[str]:
    db = Database(open_engine(f"sqlite:///{server.data_dir / 'registry.db'}"))
    try:
        key = get_or_create_secret(db, "jwt-signing-key", lambda: "").encode()
    finally:
        db.dispose()
    now = int(time.time())
    claims = {
        "iss": DEFAULT_ISSUER,
        "sub": "system:admin",
        "aud": [DEFAULT_AUDIENCE],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "groups": ["system:masters"],
    }

    def part(value: Any) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    body = part(claims)
    none = f"{part({'alg': 'none', 'typ': 'JWT'})}.{body}."
    signer = TokenSigner(key)
    hs_input = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{body}"
    mac = hmac.new(signer.public_key_pem(), hs_input.encode(), hashlib.sha256).digest()
    hs256 = f"{hs_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    past = datetime.now(UTC) - timedelta(hours=2)
    expired, _ = TokenSigner(key, clock=lambda: past).issue(
        "system:admin", groups=["system:masters"], expires_in_seconds=600
    )
    other_audience, _ = signer.issue(
        "system:admin", groups=["system:masters"], audiences=["https://elsewhere"]
    )
    return [none, hs256, expired, other_audience]


def test_forged_expired_and_foreign_tokens_are_refused(server: RegistryProcess) -> None:
    for token in _forged(server):
        with server.client(token) as client:
            assert client.get("/api/v1/namespaces").status_code == 401
            assert client.get("/v2/_catalog").status_code == 401
            reply = client.get("/v2/token")
            assert reply.status_code == 401 and token not in reply.text
        basic = _basic("x", token)
        with server.client() as client:
            assert client.get("/v2/token", headers={"Authorization": basic}).status_code == 401


@pytest.mark.parametrize(
    "header",
    [
        "Basic " + base64.b64encode(b"no-colon").decode(),
        _basic("alice", ""),
        _basic("", ""),
        _basic("alice", PASSWORD + "x"),
        _basic("alice", PASSWORD.upper()),
        _basic("älïcé", "密码" * 300),
        _basic("alice", "x" * 60_000),
        "Basic !!!not-base64!!!",
        "Basic",
        "Bearer",
        "Bearer " + "garbage." * 3,
        "Bearer ir_" + "A" * 43,
        "Bearer " + PASSWORD,
        "Digest username=alice",
        "Basic " + base64.b64encode(b"alice:\xff\xfe").decode(),
    ],
)
def test_bad_credentials_are_401_everywhere_and_never_echoed(
    server: RegistryProcess, header: str
) -> None:
    with server.client() as client:
        for method, path in (("GET", "/v2/"), ("GET", "/v2/token"), ("GET", "/api/v1/namespaces")):
            # Sent as UTF-8 bytes: the server sees them as latin-1 text.
            reply = client.request(method, path, headers={b"Authorization": header.encode()})
            assert reply.status_code == 401, (path, reply.text)
            value = header.partition(" ")[2]
            assert not value or value not in reply.text
            assert PASSWORD not in reply.text and "Authorization" not in reply.text


def test_htpasswd_login_with_unicode_password_works(server: RegistryProcess) -> None:
    header = _basic("alice", PASSWORD)
    with server.client() as client:
        assert client.get("/v2/", headers={"Authorization": header}).status_code == 200
    assert _user(server, _token(server, Authorization=header)) == "alice"


def test_htpasswd_changes_apply_without_a_restart(server: RegistryProcess) -> None:
    htpasswd = server.data_dir.parent / "htpasswd"
    alice = htpasswd.read_text()
    bob_hash = bcrypt.hashpw(b"bob-pass", bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(alice + f"bob:{bob_hash}\n")  # `htpasswd -B FILE bob`
    bob = _basic("bob", "bob-pass")
    deadline = time.monotonic() + 10
    with server.client() as client:
        while client.get("/v2/", headers={"Authorization": bob}).status_code != 200:
            assert time.monotonic() < deadline, "a user added to the file never logged in"
            time.sleep(0.2)
    token = _token(server, Authorization=bob)
    with server.client(token) as client:
        assert client.get("/v2/").status_code == 200  # remembered by the worker from now on
    htpasswd.write_text(alice)  # `htpasswd -D FILE bob`
    time.sleep(1.2)  # the file is looked at again at most once a second
    with server.client() as client:
        expected = [(bob, 401), (f"Bearer {token}", 401), (_basic("alice", PASSWORD), 200)]
        for header, status in expected:
            assert client.get("/v2/", headers={"Authorization": header}).status_code == status


def _token_request(
    server: RegistryProcess, token: str, ns: str, sa: str, spec: dict[str, Any] | None = None
) -> httpx.Response:
    with server.client(token) as client:
        return client.post(
            f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
            json={**TOKEN_REQUEST, "spec": spec or {}},
        )


def test_token_requests_need_create_token_in_that_namespace(
    server: RegistryProcess, admin: httpx.Client
) -> None:
    for ns in ("tr-a", "tr-b"):
        _namespace(admin, ns)
        sa = {"metadata": {"name": "bot"}}
        assert admin.post(f"/api/v1/namespaces/{ns}/serviceaccounts", json=sa).status_code == 201
    editor, owner = add_user_token(server, "tr-editor"), add_user_token(server, "tr-owner")
    SECRETS.extend([editor, owner])
    _bind(admin, "tr-a", "tr-editor", "edit")  # may write service accounts, not mint tokens
    _bind(admin, "tr-a", "tr-owner", "admin")
    assert _token_request(server, editor, "tr-a", "bot").status_code == 403
    assert _token_request(server, owner, "tr-b", "bot").status_code == 403
    assert _token_request(server, owner, "tr-a", "missing").status_code == 404
    minted = _token_request(server, owner, "tr-a", "bot")
    assert minted.status_code == 201
    assert _user(server, minted.json()["status"]["token"]) == "system:serviceaccount:tr-a:bot"
    for seconds in (599, 0, 0.5, "3600", True, 365 * 24 * 3600 + 1, -1):
        spec = {"expirationSeconds": seconds}
        assert _token_request(server, owner, "tr-a", "bot", spec).status_code == 422, seconds
    # No Pod, Secret or Node exists here to bind to: refused, not minted unbound.
    bound = {"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s1"}}
    refused = _token_request(server, owner, "tr-a", "bot", bound)
    assert refused.status_code == 404 and refused.json()["message"] == 'secrets "s1" not found'
    bound["boundObjectRef"]["kind"] = "ConfigMap"
    assert _token_request(server, owner, "tr-a", "bot", bound).status_code == 400
    foreign = _token_request(server, owner, "tr-a", "bot", {"audiences": ["https://elsewhere"]})
    assert foreign.status_code == 201
    with server.client(foreign.json()["status"]["token"]) as client:
        assert client.get("/v2/").status_code == 401


def _mint(admin: httpx.Client, ns: str, sa: str) -> str:
    reply = admin.post(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", json=TOKEN_REQUEST)
    assert reply.status_code == 201, reply.text
    token = str(reply.json()["status"]["token"])
    SECRETS.append(token)
    return token


def _works(server: RegistryProcess, token: str) -> int:
    with server.client(token) as client:
        return client.post(SSR, json={"apiVersion": "authentication.k8s.io/v1"}).status_code


def test_service_account_tokens_die_with_the_account_and_the_namespace(
    server: RegistryProcess, admin: httpx.Client
) -> None:
    # Tokens here are first presented after the deletion, so the per-process 5 s cache of
    # successful authentications (authn.py) cannot be what decides.
    _namespace(admin, "sa-del")
    accounts = "/api/v1/namespaces/sa-del/serviceaccounts"
    assert admin.post(accounts, json={"metadata": {"name": "bot"}}).status_code == 201
    old = _mint(admin, "sa-del", "bot")
    assert admin.delete(f"{accounts}/bot").status_code == 200
    assert _works(server, old) == 401
    assert admin.post(accounts, json={"metadata": {"name": "bot"}}).status_code == 201
    assert _works(server, old) == 401  # a re-created account is another account (uid)
    new, unused = _mint(admin, "sa-del", "bot"), _mint(admin, "sa-del", "bot")
    assert _works(server, new) == 201  # now remembered by the (single) worker's cache
    assert admin.delete("/api/v1/namespaces/sa-del").status_code == 200
    assert _works(server, new) == 401  # the deleting process forgot it at once
    assert _works(server, unused) == 401
    with server.client(unused) as client:
        assert client.get("/v2/", headers={"Authorization": _basic("x", unused)}).status_code == 401


def _cluster_role(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        **extra,
    }


# Selects every bootstrap ClusterRole, cluster-admin included.
BOOTSTRAP = {"kubernetes.io/bootstrapping": "rbac-defaults"}
GRAB_ALL = {"clusterRoleSelectors": [{"matchLabels": BOOTSTRAP}]}


def test_aggregation_rule_needs_cluster_admin(server: RegistryProcess, admin: httpx.Client) -> None:
    manage = [
        {
            "verbs": ["get", "list", "create", "update", "patch"],
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["clusterroles"],
        }
    ]
    assert (
        admin.post(f"{RBAC}/clusterroles", json=_cluster_role("rm", rules=manage)).status_code
        == 201
    )
    binding = {
        "metadata": {"name": "rm"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "rm"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "rm-user"}],
    }
    assert admin.post(f"{RBAC}/clusterrolebindings", json=binding).status_code == 201
    token = add_user_token(server, "rm-user")
    SECRETS.append(token)
    with server.client(token) as client:
        created = client.post(
            f"{RBAC}/clusterroles", json=_cluster_role("grab", aggregationRule=GRAB_ALL)
        )
        assert created.status_code == 403
        assert "aggregationRule" in created.json()["message"]
        own = client.get(f"{RBAC}/clusterroles/rm").json()
        own["aggregationRule"] = GRAB_ALL
        assert client.put(f"{RBAC}/clusterroles/rm", json=own).status_code == 403
        patch = {"aggregationRule": GRAB_ALL}
        patched = client.patch(
            f"{RBAC}/clusterroles/rm",
            content=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 403
        assert client.get("/api/v1/namespaces").status_code == 403
        # Rules the user holds may still be written, labels included.
        plain = _cluster_role("rm-copy", rules=manage)
        assert client.post(f"{RBAC}/clusterroles", json=plain).status_code == 201
    fine = admin.post(f"{RBAC}/clusterroles", json=_cluster_role("agg", aggregationRule=GRAB_ALL))
    assert fine.status_code == 201


def test_bind_verb_is_per_role_and_namespace_admins_cannot_bind_cluster_admin(
    server: RegistryProcess, admin: httpx.Client
) -> None:
    _namespace(admin, "bind-ns")
    _bind(admin, "bind-ns", "ns-admin", "admin")
    may_bind_view = _cluster_role(
        "bind-view",
        rules=[
            {
                "verbs": ["bind"],
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["clusterroles"],
                "resourceNames": ["view"],
            }
        ],
    )
    assert admin.post(f"{RBAC}/clusterroles", json=may_bind_view).status_code == 201
    _bind(admin, "bind-ns", "binder", "bind-view")
    grant = {
        "verbs": ["create"],
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["rolebindings"],
    }
    make_bindings = _cluster_role("make-bindings", rules=[grant])
    assert admin.post(f"{RBAC}/clusterroles", json=make_bindings).status_code == 201
    _bind(admin, "bind-ns", "binder", "make-bindings")
    ns_admin, binder = add_user_token(server, "ns-admin"), add_user_token(server, "binder")
    SECRETS.extend([ns_admin, binder])

    def bind(token: str, name: str, role: str) -> int:
        body = {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "x"}],
        }
        with server.client(token) as client:
            return client.post(f"{RBAC}/namespaces/bind-ns/rolebindings", json=body).status_code

    assert bind(ns_admin, "to-cluster-admin", "cluster-admin") == 403
    assert bind(ns_admin, "to-edit", "edit") == 201  # held through admin
    assert bind(binder, "binder-view", "view") == 201  # the bind verb, for view only
    assert bind(binder, "binder-admin", "admin") == 403


def test_no_secret_reaches_the_server_log(server: RegistryProcess, admin: httpx.Client) -> None:
    """Every password and token used in this process (this test's own and, when the module
    runs in one process, those of the tests above), searched for in the debug log."""
    _namespace(admin, "log-ns")
    sa = {"metadata": {"name": "b"}}
    account = admin.post("/api/v1/namespaces/log-ns/serviceaccounts", json=sa)
    assert account.status_code == 201
    minted = _mint(admin, "log-ns", "b")
    issued = _token(server, Authorization=_basic("alice", PASSWORD))
    with server.client() as client:
        for header in (_basic("alice", PASSWORD + "!"), f"Bearer {minted}x", f"Bearer {issued}"):
            client.get("/v2/_catalog", headers={"Authorization": header})
            client.get("/api/v1/namespaces", headers={"Authorization": header})
    review = {"apiVersion": "authentication.k8s.io/v1", "spec": {"token": minted}}
    reply = admin.post("/apis/authentication.k8s.io/v1/tokenreviews", json=review)
    assert reply.status_code == 201 and minted not in reply.text
    log = server.log_text()
    assert "Serving on" in log  # the right file
    leaked = [s[:12] for s in SECRETS if s in log]
    assert leaked == []
    assert "authorization:" not in log.lower()


def test_token_review_honours_the_callers_audiences(
    server: RegistryProcess, admin: httpx.Client
) -> None:
    _namespace(admin, "tr-aud")
    sa = {"metadata": {"name": "bot"}}
    assert admin.post("/api/v1/namespaces/tr-aud/serviceaccounts", json=sa).status_code == 201
    token = _mint(admin, "tr-aud", "bot")

    def review(audiences: list[str] | None) -> dict[str, Any]:
        spec: dict[str, Any] = {"token": token}
        if audiences is not None:
            spec["audiences"] = audiences
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        reply = admin.post("/apis/authentication.k8s.io/v1/tokenreviews", json=body)
        assert reply.status_code == 201, reply.text
        assert token not in reply.text
        return dict(reply.json()["status"])

    # Another service asking about its own audience must not accept a registry token.
    assert review(["https://elsewhere"])["authenticated"] is False
    mine = review(None)
    assert mine["authenticated"] is True and mine["audiences"] == [DEFAULT_AUDIENCE]
    both = review(["https://elsewhere", DEFAULT_AUDIENCE])
    assert both["authenticated"] is True and both["audiences"] == [DEFAULT_AUDIENCE]
    spec = {"token": token, "audiences": "x"}
    body = {"apiVersion": "authentication.k8s.io/v1", "spec": spec}
    reply = admin.post("/apis/authentication.k8s.io/v1/tokenreviews", json=body)
    assert reply.status_code == 400
