"""The generic `objects` table as the API's resource store reads and writes it.

Namespaces, service accounts, the RBAC kinds and the other stored kinds are JSON bodies
keyed by (resource, namespace, name). `apiserver/store.py` decides (normalizing, validating,
admission, the resourceVersion precondition) and calls these inside its own transactions;
each write here is one statement, and the caller records the change that gives it its
resourceVersion in the same transaction (`db.record_change`), so the change log and the
rows never disagree. The body is stored exactly as the API returns it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, and_, delete, insert, or_, select, tuple_, update

from imageregistry.metadata.db import record_change
from imageregistry.metadata.tables import objects


@dataclass(frozen=True)
class StoredObject:
    """One object as a write needs it: its row id, its resourceVersion and its body."""

    id: int
    resource_version: int
    body: dict[str, Any]


class ListedObject(NamedTuple):
    namespace: str
    name: str
    body: dict[str, Any]


def find_object(conn: Connection, resource: str, namespace: str, name: str) -> StoredObject | None:
    row = conn.execute(
        select(objects.c.id, objects.c.resource_version, objects.c.body).where(
            objects.c.resource == resource,
            objects.c.namespace == namespace,
            objects.c.name == name,
        )
    ).first()
    return None if row is None else StoredObject(row.id, row.resource_version, row.body)


def bodies_by_key(
    conn: Connection, resource: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The bodies of the objects at (namespace, name) `keys`, in one query."""
    query = select(objects.c.namespace, objects.c.name, objects.c.body).where(
        objects.c.resource == resource,
        tuple_(objects.c.namespace, objects.c.name).in_(list(keys)),
    )
    return {(row.namespace, row.name): dict(row.body) for row in conn.execute(query)}


def iter_objects(
    conn: Connection,
    resource: str,
    namespace: str,
    *,
    name: str | None = None,
    after: tuple[str, str] | None = None,
) -> Iterator[ListedObject]:
    """The objects of `resource` in (namespace, name) order, read as the caller iterates.

    `namespace` "" means every namespace; `name` pins one name (a `metadata.name` field
    selector); `after` is the (namespace, name) a continue token resumes behind."""
    query = select(objects.c.namespace, objects.c.name, objects.c.body).where(
        objects.c.resource == resource
    )
    if namespace:
        query = query.where(objects.c.namespace == namespace)
    if name is not None:
        query = query.where(objects.c.name == name)
    if after is not None:
        ns, last = after
        query = query.where(
            or_(objects.c.namespace > ns, and_(objects.c.namespace == ns, objects.c.name > last))
        )
    query = query.order_by(objects.c.namespace, objects.c.name)
    for row in conn.execute(query):
        yield ListedObject(row.namespace, row.name, row.body)


def insert_object(
    conn: Connection,
    resource: str,
    namespace: str,
    name: str,
    *,
    uid: str,
    resource_version: int,
    created: datetime,
    body: dict[str, Any],
) -> None:
    conn.execute(
        insert(objects).values(
            resource=resource,
            namespace=namespace,
            name=name,
            uid=uid,
            resource_version=resource_version,
            created=created,
            labels=body["metadata"].get("labels") or {},
            body=body,
        )
    )


def replace_object(
    conn: Connection, row_id: int, resource_version: int, body: dict[str, Any]
) -> None:
    conn.execute(
        update(objects)
        .where(objects.c.id == row_id)
        .values(
            resource_version=resource_version,
            labels=body["metadata"].get("labels") or {},
            body=body,
        )
    )


def delete_object(conn: Connection, row_id: int) -> None:
    conn.execute(delete(objects).where(objects.c.id == row_id))


def delete_namespace_objects(conn: Connection, namespace: str) -> None:
    """Remove every object of a namespace, logging a DELETED change for each (watchers)."""
    rows = conn.execute(
        select(objects.c.id, objects.c.resource, objects.c.name).where(
            objects.c.namespace == namespace
        )
    ).all()
    for row in rows:
        record_change(conn, row.resource, namespace, row.name, "DELETED")
    if rows:
        conn.execute(delete(objects).where(objects.c.namespace == namespace))
