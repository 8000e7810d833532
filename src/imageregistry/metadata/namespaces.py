"""Namespaces as stored in the generic `objects` table (resource `namespaces`).

The data plane only needs to know whether a namespace exists and, for a cluster-admin's
push into a missing one, to create it (docs/behaviour.md#bootstrap-roles). The body
is a Kubernetes v1 Namespace so the API server serves it unchanged.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from imageregistry.clock import rfc3339
from imageregistry.metadata.db import record_change
from imageregistry.metadata.tables import objects

RESOURCE = "namespaces"


def _where(name: str) -> tuple[Any, ...]:
    return (objects.c.resource == RESOURCE, objects.c.namespace == "", objects.c.name == name)


def namespace_exists(conn: Connection, name: str) -> bool:
    return conn.execute(select(objects.c.id).where(*_where(name))).first() is not None


def namespace_body(conn: Connection, name: str) -> dict[str, Any] | None:
    """The stored v1 Namespace object, or None."""
    body = conn.execute(select(objects.c.body).where(*_where(name))).scalar()
    return body if isinstance(body, dict) else None


def create_namespace(conn: Connection, name: str, now: datetime) -> None:
    """Insert a Namespace object unless it exists (a concurrent push may create it too)."""
    uid = str(uuid.uuid4())
    meta = {
        "name": name,
        "uid": uid,
        "creationTimestamp": rfc3339(now),
        "labels": {"kubernetes.io/metadata.name": name},
    }
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": meta,
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }
    values = {
        "resource": RESOURCE,
        "namespace": "",
        "name": name,
        "uid": uid,
        "resource_version": 0,
        "created": now,
        "labels": meta["labels"],
        "body": body,
    }
    try:
        with conn.begin_nested():
            conn.execute(insert(objects).values(**values))
    except IntegrityError:
        return  # created concurrently: fine
    rv = record_change(conn, RESOURCE, "", name, "ADDED")
    body = {**body, "metadata": {**meta, "resourceVersion": str(rv)}}
    conn.execute(update(objects).where(objects.c.uid == uid).values(resource_version=rv, body=body))
