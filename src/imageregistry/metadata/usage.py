"""Usage statistics behind `ac adm top images|imagestreams`, as set-based SQL.

behaviour.md §4: per image, the streams and tags where it is the *current* item (the
newest tag event of a repository+tag, i.e. its highest id), the images that are its parents
(their top non-empty layer is a lower layer of this one), whether the registry knows its
manifest and layers, and its storage (unique layers plus config, precomputed on push in
`manifests.storage_size`); per stream, the images current in some tag, the sum of their
layer counts and the bytes of their unique blobs. Everything is computed with a handful of
GROUP BY / join queries whose results are streamed row by row, never one query per image,
so a database of 100,000 images and a million tag events answers in seconds.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Select, and_, desc, func, literal, or_, select, union
from sqlalchemy.sql.selectable import Subquery

from imageregistry.metadata.db import as_utc
from imageregistry.metadata.tables import (
    manifest_blobs,
    manifest_children,
    manifests,
    repositories,
    repository_manifests,
    tag_events,
)

_STREAM_BATCH = 2000
_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)(?:[-+._].*)?$")


@dataclass(frozen=True)
class StreamTags:
    """The tags of one stream that currently point at an image."""

    namespace: str
    stream: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class ImageUsage:
    name: str
    streams: tuple[StreamTags, ...]
    parents: tuple[str, ...]
    last_pulled: datetime | None
    metadata: bool
    storage: int
    layers: int

    @property
    def tag_count(self) -> int:
        return sum(len(s.tags) for s in self.streams)


@dataclass(frozen=True)
class StreamUsage:
    namespace: str
    name: str
    storage: int
    images: int
    layers: int


def tag_sort_key(tag: str) -> tuple[int, tuple[int, ...], str]:
    """`latest` first, then version-like tags newest first, then the rest alphabetically."""
    if tag == "latest":
        return (0, (), "")
    match = _VERSION.match(tag)
    if match:
        return (1, tuple(-int(p) for p in match.group(1).split(".")), tag)
    return (2, (), tag)


def order_tags(tags: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(tags, key=tag_sort_key))


def _current_events(namespace: str | None) -> Subquery:
    """(repository_id, namespace, stream, tag, digest) of every tag's newest event."""
    newest = select(func.max(tag_events.c.id).label("id")).group_by(
        tag_events.c.repository_id, tag_events.c.tag
    )
    query = select(
        tag_events.c.repository_id,
        repositories.c.namespace,
        repositories.c.name.label("stream"),
        tag_events.c.tag,
        tag_events.c.digest,
    ).join(repositories, repositories.c.id == tag_events.c.repository_id)
    if namespace is not None:
        in_ns = select(repositories.c.id).where(repositories.c.namespace == namespace)
        newest = newest.where(tag_events.c.repository_id.in_(in_ns.scalar_subquery()))
        query = query.where(repositories.c.namespace == namespace)
    return query.where(tag_events.c.id.in_(newest.scalar_subquery())).subquery("cur")


def _current_tags(conn: Connection, namespace: str | None) -> dict[str, list[StreamTags]]:
    cur = _current_events(namespace)
    rows = conn.execute(
        select(cur.c.digest, cur.c.namespace, cur.c.stream, cur.c.tag).order_by(
            cur.c.digest, cur.c.namespace, cur.c.stream
        )
    )
    grouped: dict[str, dict[tuple[str, str], list[str]]] = defaultdict(dict)
    for digest, ns, stream, tag in rows:
        grouped[digest].setdefault((ns, stream), []).append(tag)
    return {
        digest: [StreamTags(ns, stream, order_tags(tags)) for (ns, stream), tags in by.items()]
        for digest, by in grouped.items()
    }


def _parents(conn: Connection) -> dict[str, list[str]]:
    parent = manifests.alias("parent")
    child = manifests.alias("child")
    rows = conn.execute(
        select(manifest_blobs.c.manifest_digest, parent.c.digest)
        .join(parent, parent.c.top_layer == manifest_blobs.c.blob_digest)
        .join(child, child.c.digest == manifest_blobs.c.manifest_digest)
        .where(
            manifest_blobs.c.position >= 0,
            parent.c.digest != child.c.digest,
            or_(child.c.top_layer.is_(None), child.c.top_layer != manifest_blobs.c.blob_digest),
        )
        .order_by(manifest_blobs.c.manifest_digest, parent.c.digest)
    )
    found: dict[str, list[str]] = defaultdict(list)
    for child_digest, parent_digest in rows:
        found[child_digest].append(parent_digest)
    return found


def _namespace_images(namespace: str) -> Select[tuple[str]]:
    in_ns = select(repositories.c.id).where(repositories.c.namespace == namespace)
    linked = select(repository_manifests.c.digest).where(
        repository_manifests.c.repository_id.in_(in_ns.scalar_subquery())
    )
    tagged = select(tag_events.c.digest).where(
        tag_events.c.repository_id.in_(in_ns.scalar_subquery())
    )
    return select(union(linked, tagged).subquery().c[0])


def image_usage(conn: Connection, namespace: str | None = None) -> Iterator[ImageUsage]:
    """Every image (or those of one namespace), sorted by tag count then storage, descending.

    Tag counts come from the current-tag map already loaded, so the image rows are one plain
    scan of `manifests`; sorting ~100k small tuples in memory is cheaper than joining the
    tag-event aggregate a second time.
    """
    tags = _current_tags(conn, namespace)
    parents = _parents(conn)
    is_index = select(manifest_children.c.parent_digest).where(
        manifest_children.c.parent_digest == manifests.c.digest
    )
    query = select(
        manifests.c.digest,
        manifests.c.last_pulled,
        and_(manifests.c.config_digest.is_not(None), manifests.c.layer_count > 0).label("known"),
        is_index.exists().label("index"),
        manifests.c.storage_size,
        manifests.c.layer_count,
    )
    if namespace is not None:
        query = query.where(manifests.c.digest.in_(_namespace_images(namespace)))
    counts = {d: sum(len(s.tags) for s in streams) for d, streams in tags.items()}
    rows = sorted(
        conn.execute(query).all(),
        key=lambda r: (-counts.get(r[0], 0), -int(r[4] or 0), r[0]),
    )
    for digest, last_pulled, known, index, storage, layers in rows:
        yield ImageUsage(
            name=digest,
            streams=tuple(tags.get(digest, ())),
            parents=tuple(parents.get(digest, ())),
            last_pulled=as_utc(last_pulled) if last_pulled is not None else None,
            metadata=bool(known) or bool(index),
            storage=int(storage or 0),
            layers=int(layers or 0),
        )


def stream_usage(conn: Connection, namespace: str | None = None) -> list[StreamUsage]:
    """Every stream (or those of one namespace), sorted by storage then images, descending."""
    cur = _current_events(namespace)
    images = select(cur.c.repository_id, cur.c.digest).distinct().subquery("images")
    per_stream = (
        select(
            images.c.repository_id,
            func.count().label("images"),
            func.coalesce(func.sum(manifests.c.layer_count), 0).label("layers"),
        )
        .join(manifests, manifests.c.digest == images.c.digest)
        .group_by(images.c.repository_id)
        .subquery("per_stream")
    )
    # Blobs of the current images and of the children of current indexes, each counted
    # once per stream ("unique layer + config bytes").
    children = select(
        images.c.repository_id, manifest_children.c.child_digest.label("digest")
    ).join(manifest_children, manifest_children.c.parent_digest == images.c.digest)
    reachable = union(select(images.c.repository_id, images.c.digest), children).subquery("r")
    unique_blobs = (
        select(reachable.c.repository_id, manifest_blobs.c.blob_digest, manifest_blobs.c.size)
        .join(manifest_blobs, manifest_blobs.c.manifest_digest == reachable.c.digest)
        .distinct()
        .subquery("unique_blobs")
    )
    storage = (
        select(unique_blobs.c.repository_id, func.sum(unique_blobs.c.size).label("bytes"))
        .group_by(unique_blobs.c.repository_id)
        .subquery("storage")
    )
    total = func.coalesce(storage.c.bytes, 0)
    count = func.coalesce(per_stream.c.images, 0)
    query = (
        select(
            repositories.c.namespace,
            repositories.c.name,
            total.label("storage"),
            count.label("images"),
            func.coalesce(per_stream.c.layers, literal(0)).label("layers"),
        )
        .outerjoin(per_stream, per_stream.c.repository_id == repositories.c.id)
        .outerjoin(storage, storage.c.repository_id == repositories.c.id)
        .order_by(desc(total), desc(count), repositories.c.namespace, repositories.c.name)
    )
    if namespace is not None:
        query = query.where(repositories.c.namespace == namespace)
    return [
        StreamUsage(ns, name, int(size), int(n), int(layers))
        for ns, name, size, n, layers in conn.execute(query)
    ]
