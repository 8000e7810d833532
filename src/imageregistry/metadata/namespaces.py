"""Namespaces as stored in the generic `objects` table (resource `namespaces`).

The data plane only needs to know whether a namespace exists and, for a cluster-admin's
push into a missing one, to create it (behaviour.md §3 "pushers create streams"). The body
is a Kubernetes v1 Namespace so the API server serves it unchanged.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Connection, insert, select

from imageregistry.metadata.db import record_change
from imageregistry.metadata.tables import objects

RESOURCE = "namespaces"


def namespace_exists(conn: Connection, name: str) -> bool:
    row = conn.execute(
        select(objects.c.id).where(
            objects.c.resource == RESOURCE, objects.c.namespace == "", objects.c.name == name
        )
    ).first()
    return row is not None


def create_namespace(conn: Connection, name: str, now: datetime) -> None:
    """Insert a Namespace object (caller checked it does not exist, inside the same txn)."""
    rv = record_change(conn, RESOURCE, "", name, "ADDED")
    uid = str(uuid.uuid4())
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": uid,
            "resourceVersion": str(rv),
            "creationTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }
    conn.execute(
        insert(objects).values(
            resource=RESOURCE,
            namespace="",
            name=name,
            uid=uid,
            resource_version=rv,
            created=now,
            labels=body["metadata"]["labels"],  # type: ignore[index]
            body=body,
        )
    )
