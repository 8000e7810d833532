"""The event notification outbox: events written with the change they report, then claimed
and delivered by a sender (`notifications.sender`).

Durability comes from the transaction: `enqueue` runs on the connection of the write that
makes the change (a manifest push, a tag or manifest delete, a blob link), so an event
exists exactly when its change was committed. One row is written per (event, endpoint), so
each endpoint progresses, fails and retries on its own.

Order per repository: `enqueue` takes the repository's next sequence numbers from
`notification_sequences` with an upsert whose row lock is held until the transaction
ends. Two transactions reporting events of one repository therefore get their numbers in
commit order, without gaps (a rolled-back transaction gives its numbers back), and a row
with number n is only ever visible after every lower number of its repository was
committed. The sender claims only the lowest `seq` of each (endpoint, repository) queue,
so a repository's events reach an endpoint one after the other, in order; a failing head
holds back the rest of its queue, never other repositories'.

Claims are leases (`claimed_by`, `claimed_until`): a claim is a conditional update in one
write transaction (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so replicas claim disjoint
rows without waiting; on SQLite the writer lock serialises claimers), so two claimers
never hold the same row at once. A sender that dies mid-delivery loses its lease when it
expires and another delivers the row again: at least once, a duplicate carrying the same
event id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from imageregistry.metadata.db import Database
from imageregistry.metadata.tables import notification_outbox as outbox
from imageregistry.metadata.tables import notification_sequences as sequences

# What a write transaction calls, on its own connection, to add the events it reports.
Emit = Callable[[Connection], None]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event for the endpoints that want it."""

    event_id: str
    payload: str  # the event as JSON
    endpoints: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    endpoint: str
    repository: str
    seq: int
    event_id: str
    payload: str
    attempts: int


def _next_numbers(conn: Connection, repository: str, count: int) -> int:
    """Reserve `count` sequence numbers of `repository`; the last one. The upsert locks the
    repository's row until this transaction ends (see the module docstring)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(sequences).values(repository=repository, last_seq=count)
    statement = statement.on_conflict_do_update(
        index_elements=[sequences.c.repository],
        set_={"last_seq": sequences.c.last_seq + count},
    ).returning(sequences.c.last_seq)
    return int(conn.execute(statement).scalar_one())


def enqueue(conn: Connection, repository: str, events: Sequence[Outgoing], now: datetime) -> None:
    """Add `events` of `repository`, in this order, to the queues of their endpoints."""
    wanted = [e for e in events if e.endpoints]
    if not wanted:
        return
    last = _next_numbers(conn, repository, len(wanted))
    rows = [
        {
            "endpoint": endpoint,
            "repository": repository,
            "seq": last - len(wanted) + 1 + i,
            "event_id": event.event_id,
            "payload": event.payload,
            "created": now,
            "attempts": 0,
            "next_attempt": now,
        }
        for i, event in enumerate(wanted)
        for endpoint in event.endpoints
    ]
    conn.execute(insert(outbox), rows)


def claim(
    db: Database,
    endpoint: str,
    holder: str,
    now: datetime,
    until: datetime,
    limit: int,
    run: int = 1,
) -> list[Claimed]:
    """Lease up to `limit` due queue heads of `endpoint` (one per repository) to `holder`,
    each with up to `run - 1` rows queued behind it; ordered by repository, then `seq`.

    Only heads are ever claimed by anyone, so the rows behind a head claimed here are
    this holder's too: nobody else takes them while the head exists."""
    earlier = outbox.alias("earlier")
    head = ~(
        select(earlier.c.id)
        .where(
            earlier.c.endpoint == outbox.c.endpoint,
            earlier.c.repository == outbox.c.repository,
            earlier.c.seq < outbox.c.seq,
        )
        .exists()
    )
    query = (
        select(outbox)
        .where(
            outbox.c.endpoint == endpoint,
            outbox.c.next_attempt <= now,
            or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now),
            head,
        )
        .order_by(outbox.c.id)
        .limit(limit)
    )
    with db.write() as conn:
        if not db.is_sqlite:
            query = query.with_for_update(skip_locked=True, of=outbox)
        heads = conn.execute(query).all()
        if not heads:
            return []
        rows = []
        for first in sorted(heads, key=lambda r: r.repository):
            rows.append(first)
            if run > 1:
                rows += conn.execute(
                    select(outbox)
                    .where(
                        outbox.c.endpoint == endpoint,
                        outbox.c.repository == first.repository,
                        outbox.c.seq > first.seq,
                    )
                    .order_by(outbox.c.seq)
                    .limit(run - 1)
                ).all()
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_([r.id for r in rows]))
            .values(claimed_by=holder, claimed_until=until)
        )
    return [
        Claimed(int(r.id), r.endpoint, r.repository, int(r.seq), r.event_id, r.payload, r.attempts)
        for r in rows
    ]


def delivered(db: Database, row_ids: Sequence[int], holder: str) -> None:
    """The rows reached their endpoint: remove them (unless a lease passed to another
    holder, which delivers them again)."""
    if not row_ids:
        return
    with db.write() as conn:
        conn.execute(
            delete(outbox).where(outbox.c.id.in_(list(row_ids)), outbox.c.claimed_by == holder)
        )


def unclaim(db: Database, row_ids: Sequence[int], holder: str) -> None:
    """Give rows back untried (behind a head whose delivery failed)."""
    if not row_ids:
        return
    with db.write() as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(list(row_ids)), outbox.c.claimed_by == holder)
            .values(claimed_by=None, claimed_until=None)
        )


def failed(db: Database, row_id: int, holder: str, next_attempt: datetime, error: str) -> None:
    """A delivery failed: count it, release the claim and wait until `next_attempt`."""
    with db.write() as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.id == row_id, outbox.c.claimed_by == holder)
            .values(
                attempts=outbox.c.attempts + 1,
                next_attempt=next_attempt,
                claimed_by=None,
                claimed_until=None,
                last_error=error[:1000],
            )
        )


def pending(db: Database) -> dict[str, int]:
    """Rows waiting per endpoint."""
    with db.read() as conn:
        rows = conn.execute(
            select(outbox.c.endpoint, func.count()).group_by(outbox.c.endpoint)
        ).all()
    return {r[0]: int(r[1]) for r in rows}


def release(db: Database, holder: str) -> None:
    """Give back every claim of `holder` (a sender stopping) so others need not wait for
    the leases to expire."""
    with db.write() as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.claimed_by == holder)
            .values(claimed_by=None, claimed_until=None)
        )
