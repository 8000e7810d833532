"""The notification outbox on SQLite and a real PostgreSQL: claims never overlap, queue
heads go out in order per repository, and events exist only when their change committed."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from imageregistry.metadata import outbox
from imageregistry.metadata.db import Database
from imageregistry.metadata.outbox import Outgoing
from imageregistry.metadata.registry import RegistryMetadata, RepoKey
from imageregistry.metadata.tables import notification_outbox

NOW = datetime(2026, 12, 1, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=5)


def add(db: Database, repository: str, count: int, endpoints: tuple[str, ...] = ("hook",)) -> None:
    with db.write() as conn:
        events = [Outgoing(str(uuid.uuid4()), f'{{"n":{i}}}', endpoints) for i in range(count)]
        outbox.enqueue(conn, repository, events, NOW)


def test_two_claimers_never_hold_the_same_row(db: Database) -> None:
    """Claimers race in threads; every row is claimed by exactly one of them while its lease
    holds, and only queue heads (one per repository) are handed out."""
    for i in range(40):
        add(db, f"team/app{i}", 3)
    claimed: dict[str, list[outbox.Claimed]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def claimer(holder: str) -> None:
        start.wait()
        for _ in range(20):
            claimed[holder] += outbox.claim(db, "hook", holder, NOW, LEASE, 3)

    threads = [threading.Thread(target=claimer, args=(h,)) for h in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    ids = [row.id for rows in claimed.values() for row in rows]
    assert len(ids) == 40  # every head once, nothing twice
    assert len(set(ids)) == len(ids)
    assert (claimed["a"] and claimed["b"]) or db.is_sqlite  # both took part (PostgreSQL)
    assert {row.seq for rows in claimed.values() for row in rows} == {1}
    with db.read() as conn:
        holders = dict(
            conn.execute(
                select(notification_outbox.c.id, notification_outbox.c.claimed_by).where(
                    notification_outbox.c.claimed_by.is_not(None)
                )
            ).all()
        )
    for holder, rows in claimed.items():
        assert all(holders[row.id] == holder for row in rows)


def test_a_repository_goes_out_in_order_and_a_failure_holds_its_queue(db: Database) -> None:
    add(db, "team/app", 3)
    add(db, "team/other", 1)
    first = outbox.claim(db, "hook", "a", NOW, LEASE, 10)
    assert sorted((r.repository, r.seq) for r in first) == [("team/app", 1), ("team/other", 1)]
    app = next(r for r in first if r.repository == "team/app")
    outbox.failed(db, app.id, "a", NOW + timedelta(seconds=30), "HTTP 503")
    # Its queue waits for the retry time; nothing behind the head goes first.
    assert outbox.claim(db, "hook", "b", NOW + timedelta(seconds=1), LEASE, 10) == []
    retried = outbox.claim(db, "hook", "b", NOW + timedelta(seconds=31), LEASE, 10)
    assert [(r.id, r.attempts) for r in retried] == [(app.id, 1)]
    outbox.delivered(db, [app.id], "b")
    assert [r.seq for r in outbox.claim(db, "hook", "b", NOW, LEASE, 10)] == [2]


def test_a_run_behind_a_head_is_claimed_with_it_and_by_nobody_else(db: Database) -> None:
    add(db, "team/app", 5)
    run = outbox.claim(db, "hook", "a", NOW, LEASE, 10, run=3)
    assert [r.seq for r in run] == [1, 2, 3]
    assert outbox.claim(db, "hook", "b", NOW, LEASE, 10, run=3) == []  # no head is free
    outbox.delivered(db, [run[0].id], "a")
    outbox.unclaim(db, [run[2].id], "a")  # seq 2 failed (released by `failed`), 3 given back
    outbox.failed(db, run[1].id, "a", NOW + timedelta(seconds=30), "HTTP 500")
    assert outbox.claim(db, "hook", "b", NOW, LEASE, 10, run=3) == []  # 2 waits, 3 behind it
    again = outbox.claim(db, "hook", "b", NOW + timedelta(seconds=31), LEASE, 10, run=9)
    assert [(r.seq, r.attempts) for r in again] == [(2, 1), (3, 0), (4, 0), (5, 0)]


def test_an_expired_lease_is_claimed_again_and_the_late_holder_changes_nothing(
    db: Database,
) -> None:
    add(db, "team/app", 1)
    (row,) = outbox.claim(db, "hook", "dead", NOW, NOW + timedelta(seconds=10), 5)
    assert outbox.claim(db, "hook", "other", NOW + timedelta(seconds=5), LEASE, 5) == []
    (again,) = outbox.claim(db, "hook", "other", NOW + timedelta(seconds=11), LEASE, 5)
    assert (again.id, again.event_id) == (row.id, row.event_id)  # same event: same id
    outbox.delivered(db, [row.id], "dead")  # the old holder's late answer: the row stays
    assert outbox.pending(db) == {"hook": 1}
    outbox.delivered(db, [row.id], "other")
    assert outbox.pending(db) == {}


def test_endpoints_progress_separately(db: Database) -> None:
    add(db, "team/app", 2, ("one", "two"))
    (one,) = outbox.claim(db, "one", "a", NOW, LEASE, 5)
    outbox.delivered(db, [one.id], "a")
    assert [r.seq for r in outbox.claim(db, "one", "a", NOW, LEASE, 5)] == [2]
    assert [r.seq for r in outbox.claim(db, "two", "a", NOW, LEASE, 5)] == [1]
    assert outbox.pending(db) == {"one": 1, "two": 2}


def test_events_exist_only_with_their_change(db: Database) -> None:
    """A write that fails leaves no event; numbers stay gapless per repository."""
    meta = RegistryMetadata(db)
    repo = RepoKey("team", "app")

    def emit(conn: object) -> None:
        outbox.enqueue(conn, str(repo), [Outgoing("e1", "{}", ("hook",))], NOW)  # type: ignore[arg-type]

    with pytest.raises(Exception, match="not found"):
        meta.unlink_blob(repo, "sha256:" + "0" * 64, emit)  # no such repository: refused
    assert outbox.pending(db) == {}
    meta.record_blob(repo, "sha256:" + "1" * 64, 5, NOW, True, emit=emit)
    meta.unlink_blob(repo, "sha256:" + "1" * 64, emit)
    rows = outbox.claim(db, "hook", "a", NOW, LEASE, 5)
    assert [r.seq for r in rows] == [1]
    outbox.delivered(db, [rows[0].id], "a")
    assert [r.seq for r in outbox.claim(db, "hook", "a", NOW, LEASE, 5)] == [2]


def test_concurrent_writers_of_one_repository_get_distinct_ordered_numbers(db: Database) -> None:
    def writer() -> None:
        for _ in range(10):
            add(db, "team/app", 2)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    with db.read() as conn:
        seqs = [r[0] for r in conn.execute(select(notification_outbox.c.seq))]
    assert sorted(seqs) == list(range(1, 61))
    assert Counter(seqs).most_common(1)[0][1] == 1
