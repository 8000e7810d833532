"""First-start and upgrade tasks run by `image-registry serve` before workers start.

- Reconcile the bootstrap RBAC objects (ClusterRoles and ClusterRoleBindings of
  docs/behaviour.md#access-control): created when missing, rules refreshed on upgrade while
  the object keeps the `rbac.authorization.kubernetes.io/autoupdate: "true"` annotation.
- The serving CA and the cluster-admin identity (`system:admin` in `system:masters`,
  an opaque token) are the registry's, not a replica's: the first start creates them in
  the shared database, every later start (another replica, a restart) adopts them. A
  single server upgraded from a version that kept its CA in `DATA_DIR/tls` and only the
  token's hash in the database contributes those instead, so nothing handed out changes.
- Every start writes `DATA_DIR/admin.kubeconfig` holding the server URL, the shared
  token, the shared CA (for HTTPS) and a context named `admin` when it is missing, and
  otherwise brings that file's admin token and CA up to date (after a rotation) without
  touching anything else in it (`ac login` may have added contexts).
"""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path
from typing import Any

import yaml

from imageregistry import apigroups
from imageregistry.auth.bootstrap_roles import bootstrap_objects
from imageregistry.auth.tokens import hash_token, new_opaque_token
from imageregistry.clock import system_clock
from imageregistry.metadata.cluster_objects import (
    find_cluster_object,
    insert_cluster_object,
    replace_cluster_object,
)
from imageregistry.metadata.db import Database, DatabaseReadOnly
from imageregistry.metadata.tokens import (
    ADMIN_TOKEN,
    SERVING_CA,
    NewToken,
    TokenStore,
    get_or_create_secret,
    get_secret,
    set_secret,
)
from imageregistry.pki import CertificateAuthority, local_ca, new_ca

ADMIN_USER = "system:admin"
ADMIN_GROUPS = ("system:masters",)
CLUSTER_NAME = "imageregistry"
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"

_RESOURCE_KEYS = {
    "ClusterRole": f"clusterroles.{apigroups.RBAC}",
    "ClusterRoleBinding": f"clusterrolebindings.{apigroups.RBAC}",
    "Namespace": "namespaces",
}


def reconcile_bootstrap_objects(db: Database) -> None:
    for obj in bootstrap_objects():
        resource = _RESOURCE_KEYS[str(obj["kind"])]
        name = str(obj["metadata"]["name"])
        with db.write() as conn:
            row = find_cluster_object(conn, resource, name)
            if row is None:
                insert_cluster_object(conn, resource, obj, system_clock())
            elif _autoupdate(row.body) and _desired_changed(row.body, obj):
                body = dict(row.body)
                for key in ("rules", "subjects", "roleRef", "aggregationRule"):
                    if key in obj:
                        body[key] = obj[key]
                replace_cluster_object(conn, resource, row, body)


def _autoupdate(body: dict[str, Any]) -> bool:
    annotations = body.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(AUTOUPDATE, "true")) == "true"


def _desired_changed(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    return any(current.get(k) != desired.get(k) for k in ("rules", "subjects", "roleRef"))


def shared_ca(db: Database, tls_dir: Path) -> CertificateAuthority | None:
    """The registry's serving CA from the shared database, created (or taken over from
    `tls_dir`, where an older version kept it) on the first start; None when the
    database holds none and refuses writes (the CA in `tls_dir` is then used)."""
    try:
        text = get_or_create_secret(
            db, SERVING_CA, lambda: (local_ca(tls_dir) or new_ca()).to_pem()
        )
    except DatabaseReadOnly:
        return None
    return CertificateAuthority.from_pem(text)


def _is_admin(db: Database, token: str) -> bool:
    found = TokenStore(db).lookup_token(hash_token(token))
    return found is not None and found[0] == ADMIN_USER


def shared_admin_token(db: Database, adopt: str | None = None) -> str:
    """The cluster-admin token every replica's kubeconfig carries.

    Created on the first start; an unknown or revoked one is replaced. `adopt` is the
    token of a kubeconfig already on disk: a live one becomes the shared token when none
    is recorded yet (a single server upgraded to shared state)."""
    stored = get_secret(db, ADMIN_TOKEN)
    if stored is not None and _is_admin(db, stored):
        return stored
    if adopt is not None and _is_admin(db, adopt):
        # A read-only database serves with the token the file already holds.
        with contextlib.suppress(DatabaseReadOnly):
            set_secret(db, ADMIN_TOKEN, adopt)
        return adopt
    return new_admin_token(db, revoked_token_sha256=hash_token(stored) if stored else None)


def new_admin_token(
    db: Database, *, revoked_token_sha256: str | None = None, revoked_username: str | None = None
) -> str:
    """A new cluster-admin token, stored as the shared secret and recorded as a token in
    the transaction that forgets the ones it replaces (`metadata.tokens.set_secret`)."""
    token = new_opaque_token()
    set_secret(
        db,
        ADMIN_TOKEN,
        token,
        new_token=NewToken(hash_token(token), ADMIN_USER, ADMIN_GROUPS),
        revoked_token_sha256=revoked_token_sha256,
        revoked_username=revoked_username,
    )
    return token


def ensure_admin_kubeconfig(
    db: Database, data_dir: Path, server_url: str, ca_pem: bytes | None
) -> Path | None:
    """Write (or refresh) `admin.kubeconfig`; returns the path if newly written."""
    path = data_dir / "admin.kubeconfig"
    current = _read_kubeconfig(path)
    if current is None:
        token = shared_admin_token(db)
        write_kubeconfig(path, server_url, token, ca_pem, context="admin", user=ADMIN_USER)
        return path
    token = shared_admin_token(db, adopt=_admin_token_of(current))
    if _refresh_kubeconfig(current, token, ca_pem):
        _write_yaml(path, current)
    return None


def _read_kubeconfig(path: Path) -> dict[str, Any] | None:
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    return loaded if isinstance(loaded, dict) else {}


def _admin_token_of(config: dict[str, Any]) -> str | None:
    for entry in config.get("users") or []:
        if isinstance(entry, dict) and entry.get("name") == ADMIN_USER:
            token = (entry.get("user") or {}).get("token")
            return str(token) if token else None
    return None


def _refresh_kubeconfig(config: dict[str, Any], token: str, ca_pem: bytes | None) -> bool:
    """Point the file's admin user at `token` and its registry cluster at `ca_pem`;
    True if anything changed."""
    changed = False
    for entry in config.get("users") or []:
        if isinstance(entry, dict) and entry.get("name") == ADMIN_USER:
            user = entry.setdefault("user", {})
            if user.get("token") != token:
                user["token"] = token
                changed = True
    if ca_pem:
        data = base64.b64encode(ca_pem).decode()
        for entry in config.get("clusters") or []:
            if isinstance(entry, dict) and entry.get("name") == CLUSTER_NAME:
                cluster = entry.setdefault("cluster", {})
                if cluster.get("certificate-authority-data") != data:
                    cluster["certificate-authority-data"] = data
                    changed = True
    return changed


def write_kubeconfig(
    path: Path,
    server_url: str,
    token: str,
    ca_pem: bytes | None,
    *,
    context: str,
    user: str,
    namespace: str = "default",
) -> None:
    cluster: dict[str, Any] = {"server": server_url}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": CLUSTER_NAME, "user": user, "namespace": namespace},
            }
        ],
        "current-context": context,
        "preferences": {},
    }
    _write_yaml(path, config)


def _write_yaml(path: Path, config: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    os.replace(tmp, path)
