"""First-start and upgrade tasks run by `image-registry serve` before workers start.

- Reconcile the bootstrap RBAC objects (ClusterRoles and ClusterRoleBindings of
  behaviour.md §3): created when missing, rules refreshed on upgrade while the object
  keeps the `rbac.authorization.kubernetes.io/autoupdate: "true"` annotation.
- On an empty data dir: create the cluster-admin identity (`system:admin` in
  `system:masters`) with an opaque token, and write `admin.kubeconfig` holding the
  server URL, the token, the CA (for HTTPS) and a context named `admin`.
"""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import insert, select, update

from imageregistry.auth.bootstrap_roles import bootstrap_objects
from imageregistry.auth.tokens import hash_token, new_opaque_token
from imageregistry.metadata.db import Database, record_change, utcnow
from imageregistry.metadata.tables import objects
from imageregistry.metadata.tokens import TokenStore

ADMIN_USER = "system:admin"
ADMIN_GROUPS = ("system:masters",)
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"

_RESOURCE_KEYS = {
    "ClusterRole": "clusterroles.rbac.authorization.k8s.io",
    "ClusterRoleBinding": "clusterrolebindings.rbac.authorization.k8s.io",
    "Namespace": "namespaces",
}


def reconcile_bootstrap_objects(db: Database) -> None:
    for obj in bootstrap_objects():
        resource = _RESOURCE_KEYS[str(obj["kind"])]
        name = str(obj["metadata"]["name"])
        with db.write() as conn:
            row = conn.execute(
                select(objects.c.id, objects.c.body).where(
                    objects.c.resource == resource,
                    objects.c.namespace == "",
                    objects.c.name == name,
                )
            ).first()
            if row is None:
                _insert(conn, resource, obj)
            elif _autoupdate(row.body) and _desired_changed(row.body, obj):
                body = dict(row.body)
                for key in ("rules", "subjects", "roleRef", "aggregationRule"):
                    if key in obj:
                        body[key] = obj[key]
                rv = record_change(conn, resource, "", name, "MODIFIED")
                body["metadata"] = {**body["metadata"], "resourceVersion": str(rv)}
                conn.execute(
                    update(objects)
                    .where(objects.c.id == row.id)
                    .values(body=body, resource_version=rv)
                )


def _autoupdate(body: dict[str, Any]) -> bool:
    annotations = body.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(AUTOUPDATE, "true")) == "true"


def _desired_changed(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    return any(current.get(k) != desired.get(k) for k in ("rules", "subjects", "roleRef"))


def _insert(conn: Any, resource: str, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    name = str(meta["name"])
    rv = record_change(conn, resource, "", name, "ADDED")
    now = utcnow()
    uid = str(uuid.uuid4())
    body = {
        **obj,
        "metadata": {
            **meta,
            "uid": uid,
            "resourceVersion": str(rv),
            "creationTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
    conn.execute(
        insert(objects).values(
            resource=resource,
            namespace="",
            name=name,
            uid=uid,
            resource_version=rv,
            created=now,
            labels=meta.get("labels") or {},
            body=body,
        )
    )


def ensure_admin_kubeconfig(
    db: Database, data_dir: Path, server_url: str, ca_pem: bytes | None
) -> Path | None:
    """Create the admin identity and kubeconfig once; returns the path if newly written."""
    path = data_dir / "admin.kubeconfig"
    if path.exists():
        return None
    token = new_opaque_token()
    TokenStore(db).add(hash_token(token), ADMIN_USER, ADMIN_GROUPS)
    write_kubeconfig(path, server_url, token, ca_pem, context="admin", user=ADMIN_USER)
    return path


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
        "clusters": [{"name": "imageregistry", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": "imageregistry", "user": user, "namespace": namespace},
            }
        ],
        "current-context": context,
        "preferences": {},
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    os.replace(tmp, path)
