"""Usage statistics behind `ac adm top images|imagestreams`, as set-based SQL.

docs/behaviour.md#ac-adm-top: per image, the streams and tags where it is the *current* item (the
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
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, desc, func, literal, select, union
from sqlalchemy.sql.selectable import Subquery

from imageregistry.metadata.tables import (
    manifest_blobs,
    manifest_children,
    manifests,
    repositories,
    repository_manifests,
    tag_events,
)

_STREAM_BATCH = 2000
_SCAN_BATCH = 20_000
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
    """(repository_id, namespace, stream, tag, digest) of every tag's newest event.

    The newest event of a tag is `max(id)` per (repository_id, tag): an aggregate the
    database answers from the (repository_id, tag, id) index alone; joining it back by
    primary key fetches the 100,000 current rows without touching the million others.
    """
    newest = select(func.max(tag_events.c.id).label("id")).group_by(
        tag_events.c.repository_id, tag_events.c.tag
    )
    if namespace is not None:
        in_ns = select(repositories.c.id).where(repositories.c.namespace == namespace)
        newest = newest.where(tag_events.c.repository_id.in_(in_ns.scalar_subquery()))
    latest = newest.subquery("latest")
    query = (
        select(
            tag_events.c.repository_id,
            repositories.c.namespace,
            repositories.c.name.label("stream"),
            tag_events.c.tag,
            tag_events.c.digest,
        )
        .select_from(latest)
        .join(tag_events, tag_events.c.id == latest.c.id)
        .join(repositories, repositories.c.id == tag_events.c.repository_id)
    )
    return query.subquery("cur")


def _scan(conn: Connection, query: Select[Any]) -> Iterator[tuple[Any, ...]]:
    """The rows of a query over plain-text columns, as tuples read from the DBAPI cursor.

    SQLAlchemy builds a `Row` per result row; for the 100,000-300,000 rows of a usage
    report that is a large share of the time. The columns read this way need no type
    processing (strings, integers, booleans) except `last_pulled`, which `_timestamp`
    parses. Rows are fetched in batches so a scan never holds every tuple at once.
    """
    compiled = query.compile(dialect=conn.dialect)
    params: Any = dict(compiled.params)
    if compiled.positiontup is not None:  # qmark / format paramstyles (sqlite3)
        params = tuple(compiled.params[name] for name in compiled.positiontup)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(str(compiled), params)
        while batch := cursor.fetchmany(_SCAN_BATCH):
            yield from batch
    finally:
        cursor.close()


def _current_tags(conn: Connection, namespace: str | None) -> dict[str, list[tuple[str, str, str]]]:
    """Image digest -> (namespace, stream, tag) of every tag whose current item it is."""
    cur = _current_events(namespace)
    rows = _scan(conn, select(cur.c.digest, cur.c.namespace, cur.c.stream, cur.c.tag))
    grouped: dict[str, list[tuple[str, str, str]]] = {}
    for digest, ns, stream, tag in rows:
        entries = grouped.get(digest)
        if entries is None:
            grouped[digest] = [(ns, stream, tag)]
        else:
            entries.append((ns, stream, tag))
    return grouped


def _stream_tags(entries: list[tuple[str, str, str]] | None) -> tuple[StreamTags, ...]:
    if not entries:
        return ()
    if len(entries) == 1:  # the common case: skip the sorting machinery
        ns, stream, tag = entries[0]
        return (StreamTags(ns, stream, (tag,)),)
    by_stream: dict[tuple[str, str], list[str]] = {}
    for ns, stream, tag in sorted(entries):
        by_stream.setdefault((ns, stream), []).append(tag)
    return tuple(StreamTags(ns, st, order_tags(tags)) for (ns, st), tags in by_stream.items())


def _parents(
    conn: Connection, tops: dict[str, str | None], wanted: set[str] | None
) -> dict[str, list[str]]:
    """Child digest -> parents: images whose top layer is a lower layer of the child.

    `tops` maps every image to its top non-empty layer. Matching in memory over one scan of
    `manifest_blobs` is several times faster than the three-way join on both databases.
    """
    by_top: dict[str, list[str]] = defaultdict(list)
    for digest, top in tops.items():
        if top is not None:
            by_top[top].append(digest)
    found: dict[str, list[str]] = defaultdict(list)
    rows = _scan(
        conn,
        select(manifest_blobs.c.manifest_digest, manifest_blobs.c.blob_digest).where(
            manifest_blobs.c.position >= 0
        ),
    )
    lookup, top_of = by_top.get, tops.get
    for child, blob in rows:
        candidates = lookup(blob)
        if candidates is None or top_of(child) == blob:
            continue
        if wanted is None or child in wanted:
            found[child] += [p for p in candidates if p != child]
    for value in found.values():
        if len(value) > 1:
            value.sort()
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


def _timestamp(value: datetime | str) -> datetime:
    """A `last_pulled` value read through `_scan`: SQLite's driver hands back the stored
    text (SQLAlchemy's `DateTime` writes ISO 8601 in UTC), PostgreSQL's a datetime in the
    session's time zone."""
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class ImageUsageRows:
    """The sorted image report: `len()` is known up front and iterating builds each row.

    Every query has run when this is returned, so the caller may close the connection
    before streaming; rows are made one at a time so 100,000 of them never sit in memory
    as objects.
    """

    def __init__(
        self,
        rows: list[Any],
        tags: dict[str, list[tuple[str, str, str]]],
        parents: dict[str, list[str]],
        indexes: set[str],
    ) -> None:
        self._rows = rows
        self._tags = tags
        self._parents = parents
        self._indexes = indexes

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[ImageUsage]:
        tags, parents, indexes = self._tags, self._parents, self._indexes
        for digest, last_pulled, known, storage, layers, _ in self._rows:
            yield ImageUsage(
                name=digest,
                streams=_stream_tags(tags.get(digest)),
                parents=tuple(parents.get(digest, ())),
                last_pulled=_timestamp(last_pulled) if last_pulled is not None else None,
                metadata=bool(known) or digest in indexes,
                storage=int(storage or 0),
                layers=int(layers or 0),
            )


def image_usage(conn: Connection, namespace: str | None = None) -> ImageUsageRows:
    """Every image (or those of one namespace), sorted by tag count then storage, descending.

    Four reads: the current-tag map, one scan of `manifests`, one of `manifest_blobs` for
    parents, and the index digests. Tag counts come from the map, so sorting ~100k small
    tuples in memory replaces joining the tag-event aggregate a second time.
    """
    tags = _current_tags(conn, namespace)
    rows = list(
        _scan(
            conn,
            select(
                manifests.c.digest,
                manifests.c.last_pulled,
                and_(manifests.c.config_digest.is_not(None), manifests.c.layer_count > 0),
                manifests.c.storage_size,
                manifests.c.layer_count,
                manifests.c.top_layer,
            ),
        )
    )
    tops = {r[0]: r[5] for r in rows}
    wanted: set[str] | None = None
    if namespace is not None:
        wanted = {str(d) for d in conn.execute(_namespace_images(namespace)).scalars()}
        rows = [r for r in rows if r[0] in wanted]
    parents = _parents(conn, tops, wanted)
    indexes = {
        str(d) for d in conn.execute(select(manifest_children.c.parent_digest).distinct()).scalars()
    }
    counts = {d: len(entries) for d, entries in tags.items()}
    rows.sort(key=lambda r: (-counts.get(r[0], 0), -int(r[3] or 0), r[0]))
    return ImageUsageRows(rows, tags, parents, indexes)


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
