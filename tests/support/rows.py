"""Rows written straight into the metadata tables, for tests that set up a database state
without pushing through the registry. Only what a test cares about is passed; the rest
gets the values a push would give a fresh row."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from imageregistry.metadata.db import record_change
from imageregistry.metadata.tables import manifests, objects, repositories

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def insert_repository(conn: Connection, namespace: str, name: str, created: datetime) -> int:
    """A new repository (ImageStream) row; returns its id."""
    key = conn.execute(
        insert(repositories).values(
            namespace=namespace,
            name=name,
            uid=str(uuid.uuid4()),
            resource_version=1,
            created=created,
        )
    ).inserted_primary_key
    assert key is not None
    return int(key[0])


def insert_manifest(
    conn: Connection,
    digest: str,
    created: datetime,
    *,
    content: bytes = b"{}",
    media_type: str = OCI_MANIFEST,
    **columns: Any,
) -> None:
    """A manifest (Image) row pushed at ``created``; ``columns`` sets any other column."""
    values: dict[str, Any] = {
        "size": len(content),
        "uid": str(uuid.uuid4()),
        "resource_version": 1,
        "pushed": created,
        **columns,
    }
    conn.execute(
        insert(manifests).values(
            digest=digest, media_type=media_type, content=content, created=created, **values
        )
    )


def insert_object(
    conn: Connection, resource: str, namespace: str, name: str, body: Any, created: datetime
) -> None:
    """An API object row (a Role, a ResourceQuota, a policy...) with the change-log row
    the API store writes with it, so watches and the RBAC snapshot see it as created."""
    rv = record_change(conn, resource, namespace, name, "ADDED")
    conn.execute(
        insert(objects).values(
            resource=resource,
            namespace=namespace,
            name=name,
            uid=str(uuid.uuid4()),
            resource_version=rv,
            created=created,
            labels={},
            body=body,
        )
    )
