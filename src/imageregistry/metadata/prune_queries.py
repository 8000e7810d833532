"""SQL for image pruning: load the planning snapshot, delete with an undo record, restore.

`load_snapshot` reads streams, tag histories, repository links and images in one
transaction. `SqlPruneDeleter` implements the executor's deleter protocols on a
connection inside the prune transaction; before deleting anything it copies the rows it
removes into `removed`, which becomes the `prune_runs` record an undo restores from.
Rows are serialized column by column (datetimes as ISO text, bytes as base64) using the
table definitions, so the record survives any JSON column implementation.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    LargeBinary,
    RowMapping,
    Table,
    delete,
    exists,
    select,
    update,
)

from imageregistry import apigroups
from imageregistry.metadata.db import as_utc, record_change
from imageregistry.metadata.prune_records import (
    ImageRecord,
    Snapshot,
    Stream,
    StreamPrune,
    TagEvent,
    TagHistory,
)
from imageregistry.metadata.tables import (
    manifest_blobs,
    manifest_children,
    manifests,
    repositories,
    repository_manifests,
    signatures,
    tag_events,
)

IMAGES = f"images.{apigroups.IMAGE}"
IMAGE_STREAMS = f"imagestreams.{apigroups.IMAGE}"


def row_to_json(table: Table, row: RowMapping) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in table.columns:
        value = row[column.name]
        if value is not None and isinstance(column.type, DateTime):
            value = as_utc(value).isoformat()
        elif value is not None and isinstance(column.type, LargeBinary):
            value = base64.b64encode(value).decode()
        out[column.name] = value
    return out


def row_from_json(table: Table, data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in table.columns:
        if column.name not in data:
            continue
        value = data[column.name]
        if value is not None and isinstance(column.type, DateTime):
            value = datetime.fromisoformat(value)
        elif value is not None and isinstance(column.type, LargeBinary):
            value = base64.b64decode(value)
        out[column.name] = value
    return out


def _histories(conn: Connection) -> dict[int, list[TagHistory]]:
    rows = conn.execute(
        select(tag_events.c.repository_id, tag_events.c.tag, tag_events.c.id)
        .add_columns(tag_events.c.digest, tag_events.c.created)
        .order_by(tag_events.c.repository_id, tag_events.c.tag, tag_events.c.id.desc())
    )
    grouped: dict[tuple[int, str], list[TagEvent]] = defaultdict(list)
    for repo_id, tag, event_id, digest, created in rows:
        grouped[(repo_id, tag)].append(TagEvent(event_id, digest, as_utc(created)))
    out: dict[int, list[TagHistory]] = defaultdict(list)
    for (repo_id, tag), events in grouped.items():
        out[repo_id].append(TagHistory(tag, tuple(events)))
    return out


def _images(conn: Connection) -> dict[str, ImageRecord]:
    children: dict[str, list[str]] = defaultdict(list)
    for parent, child in conn.execute(
        select(manifest_children.c.parent_digest, manifest_children.c.child_digest).order_by(
            manifest_children.c.parent_digest, manifest_children.c.position
        )
    ):
        children[parent].append(child)
    out: dict[str, ImageRecord] = {}
    for digest, pushed, subject in conn.execute(
        select(manifests.c.digest, manifests.c.pushed, manifests.c.subject_digest)
    ):
        out[digest] = ImageRecord(digest, as_utc(pushed), tuple(children.get(digest, ())), subject)
    return out


def load_snapshot(conn: Connection) -> Snapshot:
    """Everything prune planning reads, from one transaction."""
    histories = _histories(conn)
    linked: dict[int, set[str]] = defaultdict(set)
    for repo_id, digest in conn.execute(
        select(repository_manifests.c.repository_id, repository_manifests.c.digest)
    ):
        linked[repo_id].add(digest)
    streams = tuple(
        Stream(
            repo_id,
            namespace,
            name,
            tuple(sorted(histories.get(repo_id, []), key=lambda h: h.tag)),
            frozenset(linked.get(repo_id, set())),
        )
        for repo_id, namespace, name in conn.execute(
            select(repositories.c.id, repositories.c.namespace, repositories.c.name).order_by(
                repositories.c.namespace, repositories.c.name
            )
        )
    )
    return Snapshot(streams, _images(conn))


def _touch_stream(conn: Connection, repository_id: int, namespace: str, name: str) -> None:
    version = record_change(conn, IMAGE_STREAMS, namespace, name, "MODIFIED")
    conn.execute(
        update(repositories)
        .where(repositories.c.id == repository_id)
        .values(resource_version=version)
    )


class SqlPruneDeleter:
    """Deletes prune plan items on `conn`, recording every removed row for undo."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.removed_events: list[dict[str, Any]] = []
        self.removed_images: list[dict[str, Any]] = []

    def delete_tag_events(self, stream: StreamPrune) -> None:
        ids = [e.id for e in stream.events]
        with self._conn.begin_nested():
            rows = self._conn.execute(
                select(tag_events).where(
                    tag_events.c.id.in_(ids), tag_events.c.repository_id == stream.repository_id
                )
            ).mappings()
            saved = [
                {
                    **row_to_json(tag_events, row),
                    "namespace": stream.namespace,
                    "stream": stream.name,
                }
                for row in rows
            ]
            self._conn.execute(delete(tag_events).where(tag_events.c.id.in_(ids)))
            _touch_stream(self._conn, stream.repository_id, stream.namespace, stream.name)
        self.removed_events.extend(saved)

    def delete_image(self, digest: str) -> None:
        with self._conn.begin_nested():
            tagged = self._conn.execute(
                select(exists().where(tag_events.c.digest == digest))
            ).scalar()
            if tagged:
                # A push tagged it after the plan was made: keep it (safe direction).
                raise RuntimeError(f"image {digest} is referenced by a tag again; kept")
            record = capture_image(self._conn, digest)
            self._conn.execute(
                delete(repository_manifests).where(repository_manifests.c.digest == digest)
            )
            self._conn.execute(delete(manifests).where(manifests.c.digest == digest))
            record_change(self._conn, IMAGES, "", digest, "DELETED")
        self.removed_images.append(record)

    def removed(self) -> dict[str, Any]:
        """The undo record of everything this deleter removed."""
        return undo_record(self.removed_events, self.removed_images)


def capture_image(conn: Connection, digest: str) -> dict[str, Any]:
    """The rows of one Image (and every stream link to it) in the undo record's shape."""
    manifest = conn.execute(select(manifests).where(manifests.c.digest == digest)).mappings().one()
    links = conn.execute(
        select(repository_manifests, repositories.c.namespace, repositories.c.name)
        .join(repositories, repositories.c.id == repository_manifests.c.repository_id)
        .where(repository_manifests.c.digest == digest)
    ).mappings()

    def rows(table: Table, column: Any) -> list[dict[str, Any]]:
        result = conn.execute(select(table).where(column == digest)).mappings()
        return [row_to_json(table, r) for r in result]

    return {
        "manifest": row_to_json(manifests, manifest),
        "blobs": rows(manifest_blobs, manifest_blobs.c.manifest_digest),
        "children": rows(manifest_children, manifest_children.c.parent_digest),
        "signatures": rows(signatures, signatures.c.image_digest),
        "repositories": [
            {
                "namespace": r["namespace"],
                "name": r["name"],
                "created": as_utc(r["created"]).isoformat(),
            }
            for r in links
        ],
    }


def undo_record(events: list[dict[str, Any]], images: list[dict[str, Any]]) -> dict[str, Any]:
    """The `removed` of a run: rows removed plus the layer and config blobs those images
    used (GC marks the run irreversible when it reclaims any of them)."""
    blob_digests: set[str] = set()
    for image in images:
        blob_digests.update(b["blob_digest"] for b in image["blobs"])
    return {"tagEvents": events, "images": images, "blobDigests": sorted(blob_digests)}


def repository_ids(
    conn: Connection, paths: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for namespace, name in set(paths):
        found = conn.execute(
            select(repositories.c.id).where(
                repositories.c.namespace == namespace, repositories.c.name == name
            )
        ).scalar()
        if found is not None:
            out[(namespace, name)] = int(found)
    return out
