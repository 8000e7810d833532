"""Reading and compacting the `changes` log (the watch history).

Every write appends a row to `changes` (`db.record_change`); its id is the resourceVersion.
Watches read the log in pages (`changes_after`), one query per page whatever the number of
changes in it. Compaction deletes rows older than the retained window and records the
highest id it may have removed as the log's *compaction mark*: a watch from a version below
the mark cannot be replayed and is answered `410 Expired`.

Compaction keeps what the rest of the registry reads from the log:

- the newest row overall: `max(id)` is the current resourceVersion, and on SQLite a table
  without AUTOINCREMENT hands out `max(rowid) + 1`, so deleting the newest row would reuse
  its id and move resourceVersions backwards;
- the newest row of every resource key: the RBAC data version is `max(id)` per RBAC resource
  (`auth.rbac_store`, `oci.pull`), and losing it would make that version move by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select, update

from imageregistry.metadata.db import Database
from imageregistry.metadata.tables import changes, settings

COMPACTION_MARK = "changes-compacted-through"  # key in the `settings` table
DELETE_CHUNK = 5000  # rows per delete transaction, so SQLite writers never wait long


@dataclass(frozen=True)
class Change:
    id: int
    resource: str
    namespace: str
    name: str
    event: str  # ADDED, MODIFIED, DELETED


_COLUMNS = (changes.c.id, changes.c.resource, changes.c.namespace, changes.c.name, changes.c.event)


def _change(row: object) -> Change:
    return Change(
        int(row.id),  # type: ignore[attr-defined]
        row.resource,  # type: ignore[attr-defined]
        row.namespace,  # type: ignore[attr-defined]
        row.name,  # type: ignore[attr-defined]
        row.event,  # type: ignore[attr-defined]
    )


def latest_change_id(conn: Connection) -> int:
    return int(conn.execute(select(func.max(changes.c.id))).scalar() or 0)


def changes_after(
    conn: Connection,
    after: int,
    limit: int,
    *,
    through: int | None = None,
    resources: Sequence[str] = (),
    namespace: str = "",
) -> list[Change]:
    """One page of the log: rows with `after < id <= through`, oldest first, optionally only
    of some resource keys in one namespace (answered from the (resource, id) index)."""
    query = select(*_COLUMNS).where(changes.c.id > after)
    if through is not None:
        query = query.where(changes.c.id <= through)
    if resources:
        query = query.where(changes.c.resource.in_(list(resources)))
    if namespace:
        query = query.where(changes.c.namespace == namespace)
    query = query.order_by(changes.c.id).limit(limit)
    return [_change(row) for row in conn.execute(query)]


def compaction_mark(conn: Connection) -> int:
    """The highest change id compaction may have removed (0: nothing ever removed)."""
    value = conn.execute(select(settings.c.value).where(settings.c.key == COMPACTION_MARK)).scalar()
    return int(value) if value else 0


def _set_mark(conn: Connection, mark: int) -> None:
    updated = conn.execute(
        update(settings).where(settings.c.key == COMPACTION_MARK).values(value=str(mark))
    )
    if not updated.rowcount:
        conn.execute(insert(settings).values(key=COMPACTION_MARK, value=str(mark)))


def compaction_cutoff(conn: Connection, before: datetime) -> int:
    """The highest id written before `before` (0 if none).

    Only rows above the current mark are looked at, so after the first compaction this
    reads the retained window rather than the whole history."""
    cutoff = conn.execute(
        select(func.max(changes.c.id)).where(
            changes.c.id > compaction_mark(conn), changes.c.at < before
        )
    ).scalar()
    return int(cutoff or 0)


def _newest_per_resource(conn: Connection, through: int) -> set[int]:
    """The newest row of every resource key that has rows up to `through` (each answered
    from the end of the (resource, id) index)."""
    resources = conn.execute(
        select(changes.c.resource).where(changes.c.id <= through).group_by(changes.c.resource)
    ).scalars()
    newest = select(func.max(changes.c.id))
    return {
        int(conn.execute(newest.where(changes.c.resource == r)).scalar_one()) for r in resources
    }


def compact(db: Database, before: datetime) -> int:
    """Delete the rows written before `before` (keeping the newest row overall and of each
    resource key, see the module docstring), raise the compaction mark, return how many rows
    went. Runs in chunks of `DELETE_CHUNK` rows, each its own transaction."""
    with db.read() as conn:
        cutoff = compaction_cutoff(conn, before)
        start = compaction_mark(conn)
    if cutoff <= start:
        return 0
    with db.write() as conn:
        # The mark goes up before any row goes: a watch that reads a page and then the mark
        # (watch.py) never takes a hole in its page for a complete history.
        if compaction_mark(conn) < cutoff:
            _set_mark(conn, cutoff)
    with db.read() as conn:
        kept = _newest_per_resource(conn, cutoff)  # includes the newest row overall
    # From the start, not the old mark: rows kept by earlier runs as the newest of their
    # resource go once a newer row of that resource exists.
    removed = 0
    low = 0
    while low < cutoff:
        with db.write() as conn:
            ids = list(
                conn.execute(
                    select(changes.c.id)
                    .where(changes.c.id > low, changes.c.id <= cutoff)
                    .order_by(changes.c.id)
                    .limit(DELETE_CHUNK)
                ).scalars()
            )
            if not ids:
                break
            doomed = [i for i in ids if i not in kept]
            if doomed:
                removed += conn.execute(delete(changes).where(changes.c.id.in_(doomed))).rowcount
            low = ids[-1]
    return removed
