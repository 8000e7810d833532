"""Prune run records: what a confirmed prune removed, restoring it, and GC's veto on undo.

Every confirmed prune writes one `prune_runs` row holding the rows it deleted (see
`prune_queries.SqlPruneDeleter`), and so does every manifest delete by digest
(`registry_manifests.delete_manifest`). `restore_run` puts them back (or, as a dry run,
says what it would put back) as long as every blob the
removed images used is still stored; registry GC marks a run `irreversible` when it
reclaims such a blob (`mark_irreversible`), and the undo then refuses with that reason.
Restoring is idempotent with respect to later pushes: an image pushed again since the
prune is left as it is, and a tag history item keeps its original id (and thus its place
in the history, which is ordered by id) unless that id has been reused.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select, text, update

from imageregistry.metadata.db import as_utc, record_change
from imageregistry.metadata.prune_queries import (
    IMAGE_STREAMS,
    IMAGES,
    repository_ids,
    row_from_json,
)
from imageregistry.metadata.signatures import restore_signature_rows
from imageregistry.metadata.tables import (
    blobs,
    manifest_blobs,
    manifest_children,
    manifests,
    prune_runs,
    repositories,
    repository_manifests,
    signatures,
    tag_events,
)
from imageregistry.metadata.tag_policies import check_rewrite, current_tags

DONE, UNDONE, IRREVERSIBLE = "done", "undone", "irreversible"


_PRUNE_LOCK = 0x5052554E  # "PRUN": pg_advisory_xact_lock key for confirmed prunes


def lock_confirmed_prunes(conn: Connection) -> None:
    """Serialize confirmed prunes: on PostgreSQL a transaction-scoped advisory lock (held
    until `conn`'s transaction ends); SQLite's write transaction already serializes them."""
    if conn.dialect.name != "sqlite":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PRUNE_LOCK})


@dataclass(frozen=True)
class PruneRun:
    id: str
    created: datetime
    user: str
    state: str
    options: Mapping[str, Any] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)
    removed: Mapping[str, Any] = field(default_factory=dict)


class UndoRefused(Exception):
    """The run cannot be restored; the message says why."""


class RunNotFound(UndoRefused):
    pass


@dataclass(frozen=True)
class RestoreItem:
    """A tag history item a restore puts back: `stream` is `namespace/name`."""

    stream: str
    tag: str
    digest: str


@dataclass(frozen=True)
class RestoreResult:
    """What an undo restored, or with `dry_run` what it would restore (same shape)."""

    run_id: str
    images: int
    tag_events: int
    streams: tuple[str, ...]
    skipped: tuple[str, ...]
    dry_run: bool = False
    image_digests: tuple[str, ...] = ()  # Image objects re-created (missing before)
    items: tuple[RestoreItem, ...] = ()


def new_run_id(now: datetime, kind: str = "prune") -> str:
    """A run id: what made it (`prune`, `delete`), when, and a random suffix."""
    return f"{kind}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def record_run(
    conn: Connection,
    run_id: str,
    user: str,
    options: Mapping[str, Any],
    removed: Mapping[str, Any],
    summary: Mapping[str, Any],
    now: datetime,
) -> None:
    conn.execute(
        insert(prune_runs).values(
            id=run_id,
            created=now,
            user=user,
            options=dict(options),
            removed=dict(removed),
            state=DONE,
            summary=dict(summary),
        )
    )


def _to_run(row: RowMapping, with_removed: bool) -> PruneRun:
    return PruneRun(
        id=row["id"],
        created=as_utc(row["created"]),
        user=row["user"],
        state=row["state"],
        options=row["options"] or {},
        summary=row["summary"] or {},
        removed=(row["removed"] or {}) if with_removed else {},
    )


def get_run(conn: Connection, run_id: str, with_removed: bool = True) -> PruneRun | None:
    row = conn.execute(select(prune_runs).where(prune_runs.c.id == run_id)).mappings().first()
    return None if row is None else _to_run(row, with_removed)


def list_runs(conn: Connection) -> list[PruneRun]:
    rows = conn.execute(select(prune_runs).order_by(prune_runs.c.created.desc())).mappings()
    return [_to_run(r, False) for r in rows]


def mark_irreversible(conn: Connection, reclaimed: Iterable[str], now: datetime) -> list[str]:
    """Flag `done` runs whose images used any reclaimed blob; return their ids."""
    gone = set(reclaimed)
    if not gone:
        return []
    marked: list[str] = []
    rows = conn.execute(
        select(prune_runs.c.id, prune_runs.c.removed, prune_runs.c.summary).where(
            prune_runs.c.state == DONE
        )
    )
    for run_id, removed, summary in rows.all():
        if gone.intersection((removed or {}).get("blobDigests", ())):
            note = {**(summary or {}), "irreversibleSince": now.isoformat()}
            conn.execute(
                update(prune_runs)
                .where(prune_runs.c.id == run_id)
                .values(state=IRREVERSIBLE, summary=note)
            )
            marked.append(run_id)
    return marked


def _check_restorable(conn: Connection, run: PruneRun, lock: bool) -> None:
    if run.state == UNDONE:
        raise UndoRefused(f"prune run {run.id} has already been undone")
    if run.state == IRREVERSIBLE:
        raise UndoRefused(
            f"prune run {run.id} cannot be undone: registry garbage collection has "
            "reclaimed blobs used by the images it removed"
        )
    wanted = set(run.removed.get("blobDigests", ()))
    query = select(blobs.c.digest).where(blobs.c.digest.in_(wanted), blobs.c.state == "present")
    if lock:
        # Same row lock the push path and GC take, so GC cannot flip these mid-restore.
        query = query.order_by(blobs.c.digest).with_for_update()  # the data plane's lock order
    present = set(conn.execute(query).scalars()) if wanted else set()
    missing = wanted - present
    if missing:
        raise UndoRefused(
            f"prune run {run.id} cannot be undone: {len(missing)} blob(s) its images used "
            "have been reclaimed by registry garbage collection"
        )


def _restore_image(conn: Connection, image: Mapping[str, Any], repo_ids: Mapping[Any, int]) -> bool:
    digest = image["manifest"]["digest"]
    exists_now = conn.execute(
        select(manifests.c.digest).where(manifests.c.digest == digest)
    ).first()
    if exists_now is None:
        version = record_change(conn, IMAGES, "", digest, "ADDED")
        row = row_from_json(manifests, image["manifest"]) | {"resource_version": version}
        conn.execute(insert(manifests).values(**row))
        for table, key in ((manifest_blobs, "blobs"), (manifest_children, "children")):
            for item in image[key]:
                conn.execute(insert(table).values(**row_from_json(table, item)))
    for link in image["repositories"]:
        repo_id = repo_ids.get((link["namespace"], link["name"]))
        if repo_id is None:
            continue
        linked = conn.execute(
            select(repository_manifests.c.digest).where(
                repository_manifests.c.repository_id == repo_id,
                repository_manifests.c.digest == digest,
            )
        ).first()
        if linked is None:
            conn.execute(
                insert(repository_manifests).values(
                    repository_id=repo_id,
                    digest=digest,
                    created=datetime.fromisoformat(link["created"]),
                )
            )
    return exists_now is None


def _restore_event(conn: Connection, event: Mapping[str, Any], repo_id: int) -> None:
    values = row_from_json(tag_events, event) | {"repository_id": repo_id}
    taken = conn.execute(select(tag_events.c.id).where(tag_events.c.id == values["id"])).first()
    if taken is not None:
        values.pop("id")
    conn.execute(insert(tag_events).values(**values))


# Called with (conn, namespace, stream, image digest) for every reference a restore would
# put back, before anything is written; it raises to refuse the whole restore.
RestoreCheck = Callable[[Connection, str, str, str], None]


def _missing_images(conn: Connection, images: list[Mapping[str, Any]]) -> list[str]:
    wanted = [image["manifest"]["digest"] for image in images]
    if not wanted:
        return []
    present = set(
        conn.execute(select(manifests.c.digest).where(manifests.c.digest.in_(wanted))).scalars()
    )
    return [d for d in wanted if d not in present]


def restore_run(
    conn: Connection,
    run_id: str,
    now: datetime,
    lock: bool,
    check: RestoreCheck | None = None,
    dry_run: bool = False,
) -> RestoreResult:
    """Restore run `run_id`; with `dry_run` only decide and describe (read-only, so it can
    run in a read transaction) — the same checks refuse it the same way either way."""
    run = get_run(conn, run_id)
    if run is None:
        raise RunNotFound(f'prune run "{run_id}" not found')
    _check_restorable(conn, run, lock)
    events = run.removed.get("tagEvents", [])
    images = run.removed.get("images", [])
    paths = [(e["namespace"], e["stream"]) for e in events]
    paths += [(r["namespace"], r["name"]) for i in images for r in i["repositories"]]
    repo_ids = repository_ids(conn, paths)
    if check is not None:
        references = {(e["namespace"], e["stream"], e["digest"]) for e in events}
        references |= {
            (r["namespace"], r["name"], i["manifest"]["digest"])
            for i in images
            for r in i["repositories"]
        }
        for namespace, stream, digest in sorted(references):
            if (namespace, stream) in repo_ids:
                check(conn, namespace, stream, digest)
    new_images = _missing_images(conn, images)
    skipped: list[str] = []
    restored: list[tuple[Mapping[str, Any], int]] = []
    for event in events:
        key = (event["namespace"], event["stream"])
        if key not in repo_ids:
            skipped.append(f"{key[0]}/{key[1]}:{event['tag']} (image stream no longer exists)")
            continue
        restored.append((event, repo_ids[key]))
    touched = sorted({(e["namespace"], e["stream"]) for e, _ in restored})
    result = RestoreResult(
        run_id,
        len(new_images),
        len(restored),
        tuple(f"{n}/{s}" for n, s in touched),
        tuple(skipped),
        dry_run,
        tuple(new_images),
        tuple(
            RestoreItem(f"{e['namespace']}/{e['stream']}", e["tag"], e["digest"])
            for e, _ in restored
        ),
    )
    if dry_run:
        return result
    recreated = [image for image in images if _restore_image(conn, image, repo_ids)]
    # After every image and link is back: a signature recorded from a pushed manifest
    # needs that manifest in its repository (foreign key).
    saved = [row_from_json(signatures, s) for image in recreated for s in image["signatures"]]
    restore_signature_rows(conn, saved)
    before = {key: current_tags(conn, repo_ids[key]) for key in touched}
    for event, repo_id in restored:
        _restore_event(conn, event, repo_id)
    for (namespace, name), tags in before.items():  # ImageTagPolicy: nothing moved
        check_rewrite(conn, namespace, name, tags, current_tags(conn, repo_ids[(namespace, name)]))
    for namespace, name in touched:
        version = record_change(conn, IMAGE_STREAMS, namespace, name, "MODIFIED")
        conn.execute(
            update(repositories)
            .where(repositories.c.id == repo_ids[(namespace, name)])
            .values(resource_version=version)
        )
    summary = {**run.summary, "undone": now.isoformat()}
    conn.execute(
        update(prune_runs).where(prune_runs.c.id == run_id).values(state=UNDONE, summary=summary)
    )
    return result
