"""The image API's reads of the typed registry tables, and the writes the API makes.

An Image is read as an `ImageRecord` (a `manifests` row with its layers, index children,
first stream and signatures), an ImageStream as a `StreamRow` plus its tag history
(`tag_event_rows`, newest first per tag); `apiserver/resources/image_objects.py` renders the
Kubernetes objects from them. What users may edit (labels, annotations, ImageStream spec)
lives in the rows' `user_data` JSON. Every write records a change (resourceVersion, watch)
under the same keys the data plane uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, delete, func, select, update

from imageregistry.metadata.db import record_change
from imageregistry.metadata.quota import check_reference
from imageregistry.metadata.registry import (
    IMAGES,
    IMAGESTREAMS,
    RepoKey,
    ensure_repository,
    insert_ignore,
    touch_repository,
)
from imageregistry.metadata.signatures import SignatureRecord, list_signatures
from imageregistry.metadata.tables import (
    manifest_blobs,
    manifest_children,
    manifests,
    repositories,
    repository_manifests,
    tag_events,
)
from imageregistry.metadata.tag_policies import (
    check_image_removal,
    check_move,
    check_rewrite,
    check_stream_removal,
    check_tag_removal,
    current_tags,
)


@dataclass(frozen=True)
class ImageLayer:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class ImageChild:
    """One manifest of an index, with the platform it is for."""

    digest: str
    media_type: str
    size: int
    architecture: str | None
    os: str | None
    variant: str | None


@dataclass(frozen=True)
class ImageRecord:
    """What the Image object is rendered from: a `manifests` row with its layers, index
    children, the stream it was first pushed to (None once no stream holds it) and its
    signatures."""

    digest: str
    uid: str
    resource_version: int
    pushed: datetime
    user_data: dict[str, Any]
    image_metadata: dict[str, Any]
    config_digest: str | None
    media_type: str
    content: bytes
    layers: list[ImageLayer]
    children: list[ImageChild]
    first_stream: StreamName | None
    signatures: list[SignatureRecord]


def first_stream_holding(conn: Connection, digest: str) -> StreamName | None:
    """The stream whose repository took manifest `digest` first (the Image's pull
    reference)."""
    row = conn.execute(
        select(repositories.c.namespace, repositories.c.name)
        .join(repository_manifests, repository_manifests.c.repository_id == repositories.c.id)
        .where(repository_manifests.c.digest == digest)
        .order_by(repository_manifests.c.created)
        .limit(1)
    ).first()
    return None if row is None else StreamName(row.namespace, row.name)


class StreamName(NamedTuple):
    namespace: str
    name: str


def streams_holding(conn: Connection, digest: str) -> list[StreamName]:
    """Every image stream whose repository holds manifest `digest`, by namespace and name."""
    rows = conn.execute(
        select(repositories.c.namespace, repositories.c.name)
        .join(repository_manifests, repository_manifests.c.repository_id == repositories.c.id)
        .where(repository_manifests.c.digest == digest)
        .order_by(repositories.c.namespace, repositories.c.name)
    )
    return [StreamName(namespace, name) for namespace, name in rows]


def _image_record(conn: Connection, row: Any) -> ImageRecord:
    layers = conn.execute(
        select(manifest_blobs.c.blob_digest, manifest_blobs.c.size, manifest_blobs.c.media_type)
        .where(manifest_blobs.c.manifest_digest == row.digest, manifest_blobs.c.position >= 0)
        .order_by(manifest_blobs.c.position)
    ).all()
    children = conn.execute(
        select(manifest_children)
        .where(manifest_children.c.parent_digest == row.digest)
        .order_by(manifest_children.c.position)
    ).all()
    return ImageRecord(
        digest=row.digest,
        uid=row.uid,
        resource_version=row.resource_version,
        pushed=row.pushed,
        user_data=dict(row.user_data or {}),
        image_metadata=dict(row.image_metadata or {}),
        config_digest=row.config_digest,
        media_type=row.media_type,
        content=bytes(row.content),
        layers=[ImageLayer(layer.blob_digest, layer.size, layer.media_type) for layer in layers],
        children=[
            ImageChild(c.child_digest, c.media_type, c.size, c.architecture, c.os, c.variant)
            for c in children
        ],
        first_stream=first_stream_holding(conn, row.digest),
        signatures=list_signatures(conn, row.digest),
    )


def find_image(conn: Connection, digest: str) -> ImageRecord | None:
    row = conn.execute(select(manifests).where(manifests.c.digest == digest)).first()
    return None if row is None else _image_record(conn, row)


def iter_images(conn: Connection) -> Iterator[ImageRecord]:
    """Every image by digest; each one's layers, children and signatures are read as the
    caller reaches it, so a page that stops early reads no more."""
    query = select(manifests).order_by(manifests.c.digest)
    for row in conn.execute(query).all():
        yield _image_record(conn, row)


def update_image_user_data(conn: Connection, digest: str, user_data: dict[str, Any]) -> int:
    rv = record_change(conn, IMAGES, "", digest, "MODIFIED")
    conn.execute(
        update(manifests)
        .where(manifests.c.digest == digest)
        .values(user_data=user_data, resource_version=rv)
    )
    return rv


def delete_image(conn: Connection, digest: str) -> bool:
    check_image_removal(conn, digest)  # ImageTagPolicy: no immutable tag may point at it
    result = conn.execute(delete(manifests).where(manifests.c.digest == digest))
    if result.rowcount == 0:
        return False
    conn.execute(delete(tag_events).where(tag_events.c.digest == digest))
    conn.execute(delete(repository_manifests).where(repository_manifests.c.digest == digest))
    record_change(conn, IMAGES, "", digest, "DELETED")
    return True


# --- streams ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamRow:
    """One `repositories` row: an image stream without its tag history."""

    id: int
    namespace: str
    name: str
    uid: str
    resource_version: int
    generation: int
    created: datetime
    user_data: dict[str, Any]


def _stream(row: Any) -> StreamRow:
    return StreamRow(
        row.id,
        row.namespace,
        row.name,
        row.uid,
        row.resource_version,
        row.generation,
        row.created,
        row.user_data,
    )


def stream_row(conn: Connection, namespace: str, name: str) -> StreamRow | None:
    row = conn.execute(
        select(repositories).where(
            repositories.c.namespace == namespace, repositories.c.name == name
        )
    ).first()
    return None if row is None else _stream(row)


def list_stream_rows(conn: Connection, namespace: str) -> list[StreamRow]:
    query = select(repositories).order_by(repositories.c.namespace, repositories.c.name)
    if namespace:
        query = query.where(repositories.c.namespace == namespace)
    return [_stream(row) for row in conn.execute(query).all()]


def create_stream(
    conn: Connection, namespace: str, name: str, user_data: dict[str, Any], now: datetime
) -> None:
    repo_id = ensure_repository(conn, RepoKey(namespace, name), now, may_create_ns=False)
    conn.execute(
        update(repositories).where(repositories.c.id == repo_id).values(user_data=user_data)
    )


def update_stream_user_data(conn: Connection, row: StreamRow, user_data: dict[str, Any]) -> None:
    generation = row.generation + (
        1 if (user_data.get("spec") != (row.user_data or {}).get("spec")) else 0
    )
    conn.execute(
        update(repositories)
        .where(repositories.c.id == row.id)
        .values(user_data=user_data, generation=generation)
    )
    touch_repository(conn, row.id, RepoKey(row.namespace, row.name))


def delete_stream(conn: Connection, row: Any) -> None:
    """Delete an image stream; refused while it holds a tag an ImageTagPolicy makes
    immutable (deleting the namespace, `delete_namespace_streams`, removes its policies
    with it and is not refused)."""
    check_stream_removal(conn, row.namespace, row.name, row.id)
    _drop_stream(conn, row)


def _drop_stream(conn: Connection, row: Any) -> None:
    conn.execute(delete(repositories).where(repositories.c.id == row.id))
    record_change(conn, IMAGESTREAMS, row.namespace, row.name, "DELETED")


def delete_namespace_streams(conn: Connection, namespace: str) -> None:
    for row in list_stream_rows(conn, namespace):
        _drop_stream(conn, row)


def delete_tag(conn: Connection, row: StreamRow, tag: str) -> bool:
    if current_tag(conn, row.id, tag) is not None:
        check_tag_removal(conn, row.namespace, row.name, tag)  # ImageTagPolicy
    result = conn.execute(
        delete(tag_events).where(tag_events.c.repository_id == row.id, tag_events.c.tag == tag)
    )
    if result.rowcount == 0:
        return False
    touch_repository(conn, row.id, RepoKey(row.namespace, row.name))
    return True


@dataclass(frozen=True)
class TagEventRow:
    """One item of a stream's tag history (`tag_events`); the newest per tag is current."""

    id: int
    repository_id: int
    tag: str
    digest: str
    created: datetime
    generation: int


def _tag_event(row: Any) -> TagEventRow:
    return TagEventRow(row.id, row.repository_id, row.tag, row.digest, row.created, row.generation)


def current_tag(conn: Connection, repo_id: int, tag: str) -> TagEventRow | None:
    newest = (
        select(func.max(tag_events.c.id))
        .where(tag_events.c.repository_id == repo_id, tag_events.c.tag == tag)
        .scalar_subquery()
    )
    row = conn.execute(select(tag_events).where(tag_events.c.id == newest)).first()
    return None if row is None else _tag_event(row)


def image_in_stream(conn: Connection, repo_id: int, digest: str) -> bool:
    row = conn.execute(
        select(repository_manifests.c.digest).where(
            repository_manifests.c.repository_id == repo_id, repository_manifests.c.digest == digest
        )
    ).first()
    return row is not None


def record_mapping(
    conn: Connection, namespace: str, stream: str, tag: str, digest: str, now: datetime
) -> None:
    """ImageStreamMapping: the stream is created if missing; the tag event is prepended unless
    the tag already points at the image (docs/behaviour.md#push-records-metadata)."""
    repo = RepoKey(namespace, stream)
    check_reference(conn, namespace, stream, digest, tag)  # quotas and limits
    repo_id = ensure_repository(conn, repo, now, may_create_ns=False)
    insert_ignore(
        conn, repository_manifests, {"repository_id": repo_id, "digest": digest, "created": now}
    )
    current = current_tag(conn, repo_id, tag)
    if current is not None and current.digest == digest:
        return
    check_move(conn, namespace, stream, tag, None if current is None else current.digest, digest)
    generation = conn.execute(
        select(repositories.c.generation).where(repositories.c.id == repo_id)
    ).scalar_one()
    conn.execute(
        tag_events.insert().values(
            repository_id=repo_id, tag=tag, digest=digest, created=now, generation=generation
        )
    )
    touch_repository(conn, repo_id, repo)


def tag_event_rows(conn: Connection, repo_id: int) -> list[TagEventRow]:
    """Every tag event of a stream: by tag, newest first (what `status.tags` renders)."""
    rows = conn.execute(
        select(tag_events)
        .where(tag_events.c.repository_id == repo_id)
        .order_by(tag_events.c.tag, tag_events.c.id.desc())
    ).all()
    return [_tag_event(row) for row in rows]


def delete_tag_events(conn: Connection, repo_id: int, ids: Iterable[int]) -> int:
    """Remove history items of one stream (the caller records the stream change)."""
    wanted = list(ids)
    if not wanted:
        return 0
    result = conn.execute(
        delete(tag_events).where(tag_events.c.repository_id == repo_id, tag_events.c.id.in_(wanted))
    )
    return int(result.rowcount or 0)


def image_exists(conn: Connection, digest: str) -> bool:
    return (
        conn.execute(select(manifests.c.digest).where(manifests.c.digest == digest)).first()
        is not None
    )


def rewrite_history(
    conn: Connection,
    row: StreamRow,
    delete_ids: Iterable[int],
    new_current: Iterable[tuple[str, str]],
    now: datetime,
) -> None:
    """Apply an `imagestreams/status` update: drop events, then put new current images on top.
    Refused (by the ImageTagPolicy check, after the fact, in the same transaction) when an
    immutable tag ends up pointing elsewhere or gone; dropping its older items is fine."""
    before = current_tags(conn, row.id)
    if delete_tag_events(conn, row.id, delete_ids):
        touch_repository(conn, row.id, RepoKey(row.namespace, row.name))
    for tag, digest in new_current:
        record_mapping(conn, row.namespace, row.name, tag, digest, now)
    check_rewrite(conn, row.namespace, row.name, before, current_tags(conn, row.id))
