"""Cluster-scoped API objects the server itself keeps in the `objects` table.

Bootstrap RBAC reconciliation (`bootstrap.reconcile_bootstrap_objects`) decides which of its
built-in ClusterRoles, ClusterRoleBindings and Namespaces to create or update; these are
the reads and writes it decides on. Each write records a change (a new resourceVersion),
so watches see bootstrap objects arrive and change like any other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from imageregistry.clock import rfc3339
from imageregistry.metadata.db import record_change
from imageregistry.metadata.tables import objects


@dataclass(frozen=True)
class ClusterObjectRow:
    id: int
    name: str
    body: dict[str, Any]


def find_cluster_object(conn: Connection, resource: str, name: str) -> ClusterObjectRow | None:
    row = conn.execute(
        select(objects.c.id, objects.c.body).where(
            objects.c.resource == resource, objects.c.namespace == "", objects.c.name == name
        )
    ).first()
    return None if row is None else ClusterObjectRow(row.id, name, row.body)


def insert_cluster_object(
    conn: Connection, resource: str, obj: dict[str, Any], now: datetime
) -> None:
    """Store `obj` as created now: a new uid, resourceVersion and creationTimestamp."""
    meta = obj["metadata"]
    name = str(meta["name"])
    rv = record_change(conn, resource, "", name, "ADDED")
    uid = str(uuid.uuid4())
    body = {
        **obj,
        "metadata": {
            **meta,
            "uid": uid,
            "resourceVersion": str(rv),
            "creationTimestamp": rfc3339(now),
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


def replace_cluster_object(
    conn: Connection, resource: str, row: ClusterObjectRow, body: dict[str, Any]
) -> None:
    """Store `body` in place of `row`'s under a new resourceVersion (a MODIFIED change)."""
    rv = record_change(conn, resource, "", row.name, "MODIFIED")
    body = {**body, "metadata": {**body["metadata"], "resourceVersion": str(rv)}}
    conn.execute(
        update(objects).where(objects.c.id == row.id).values(body=body, resource_version=rv)
    )
