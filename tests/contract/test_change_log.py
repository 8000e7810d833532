"""The change log behind watches, on SQLite and PostgreSQL: compaction keeps what
resourceVersions and the RBAC version need, a replay reads the log a page at a time (not an
object read per change), a version older than the compacted history answers 410 Expired,
and the shared feed never passes a change that commits late on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select

from imageregistry.apiserver.resource import ListOptions, RequestContext
from imageregistry.apiserver.resources.namespaces import Namespaces
from imageregistry.apiserver.watch import WatchStream
from imageregistry.auth.identity import authenticated
from imageregistry.auth.rbac_store import build_authorizer
from imageregistry.changefeed import ChangeFeed
from imageregistry.metadata.changelog import Change, compact, compaction_mark
from imageregistry.metadata.db import Database, record_change
from imageregistry.metadata.engine import open_engine
from imageregistry.metadata.tables import changes
from tests.support.postgres import fresh_database_url

ADMIN = authenticated("root", ("system:masters",))
NOW = datetime(2026, 11, 1, tzinfo=UTC)
OLD = NOW - timedelta(hours=2)
NS = "namespaces"
ROLES = "clusterroles.rbac.authorization.k8s.io"


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    database = Database(open_engine(fresh_database_url(request, tmp_path, "postgresql")))
    yield database
    database.dispose()


def add(db: Database, resource: str, name: str, at: datetime, event_type: str = "ADDED") -> int:
    with db.write() as conn:
        key = conn.execute(
            insert(changes).values(
                resource=resource, namespace="", name=name, event=event_type, at=at
            )
        ).inserted_primary_key
    assert key is not None
    return int(key[0])


def ids(db: Database) -> list[int]:
    with db.read() as conn:
        return list(conn.execute(select(changes.c.id).order_by(changes.c.id)).scalars())


def newest(db: Database, resource: str) -> int | None:
    with db.read() as conn:
        value = conn.execute(
            select(func.max(changes.c.id)).where(changes.c.resource == resource)
        ).scalar()
    return None if value is None else int(value)


def ctx(db: Database) -> RequestContext:
    return RequestContext(ADMIN, build_authorizer(db), lambda: NOW)


def version_to_resume_from(namespaces: Namespaces) -> str:
    """A resourceVersion after one change (a watch from "0" would list, not replay)."""
    namespaces.create(ctx(namespaces.db), "", {"metadata": {"name": "before"}})
    return namespaces.list(ctx(namespaces.db), "", ListOptions()).resource_version


# --- compaction ---------------------------------------------------------------------------


def test_compaction_keeps_the_window_the_newest_row_and_each_resources_newest(
    db: Database,
) -> None:
    role = add(db, ROLES, "r", OLD)
    old = [add(db, NS, f"old-{i}", OLD) for i in range(30)]
    recent = [add(db, NS, f"new-{i}", NOW) for i in range(3)]
    rbac_version = newest(db, ROLES)

    removed = compact(db, NOW - timedelta(hours=1))

    assert removed == len(old)
    assert ids(db) == [role, *recent]
    with db.read() as conn:
        assert compaction_mark(conn) == old[-1]
    assert newest(db, ROLES) == rbac_version  # the RBAC data version did not move
    # nothing more to do until the window moves; ids keep growing past the removed ones
    assert compact(db, NOW - timedelta(hours=1)) == 0
    with db.write() as conn:
        assert record_change(conn, NS, "", "after", "ADDED") > recent[-1]


def test_compaction_never_removes_the_newest_row(db: Database) -> None:
    rows = [add(db, NS, f"n-{i}", OLD) for i in range(5)]
    compact(db, NOW)
    assert ids(db) == [rows[-1]]
    with db.write() as conn:  # on SQLite, deleting it would hand its id out again
        assert record_change(conn, NS, "", "next", "ADDED") == rows[-1] + 1 or not db.is_sqlite
    assert max(ids(db)) > rows[-1]


def test_rows_kept_for_their_resource_go_once_a_newer_row_exists(db: Database) -> None:
    kept = add(db, ROLES, "r", OLD)
    add(db, NS, "a", OLD)
    add(db, NS, "b", OLD)
    compact(db, NOW - timedelta(hours=1))
    assert kept in ids(db)
    newer = add(db, ROLES, "r", OLD + timedelta(minutes=1), "MODIFIED")
    last = add(db, NS, "c", NOW)
    compact(db, NOW - timedelta(hours=1))
    assert ids(db) == [newer, last]


# --- replay -------------------------------------------------------------------------------


class Statements:
    """Counts the SQL statements an engine runs (what a replay costs the database)."""

    def __init__(self, db: Database) -> None:
        self.count = 0
        event.listen(db.engine, "before_cursor_execute", self._seen)
        self._db = db

    def _seen(self, *_args: Any) -> None:
        self.count += 1

    def close(self) -> None:
        event.remove(self._db.engine, "before_cursor_execute", self._seen)


def watch(
    db: Database, handler: Any, rv: str, *, seconds: float = 0.5, bookmarks: bool = False
) -> tuple[list[dict[str, Any]], int]:
    """Run a watch until `seconds` pass; its events and the SQL statements it ran."""
    feed = ChangeFeed(db)

    async def consume() -> tuple[list[dict[str, Any]], int]:
        async with feed.running():
            stream = WatchStream(
                db,
                feed,
                handler,
                ctx(db),
                "",
                ListOptions(resource_version=rv),
                lambda o, _: o,
                bookmarks=bookmarks,
            )
            counter = Statements(db)
            try:
                lines = [json.loads(line) async for line in stream.events(seconds)]
            finally:
                counter.close()
        return lines, counter.count

    return asyncio.run(consume())


def test_replay_reads_a_page_of_changes_per_query(db: Database) -> None:
    namespaces = Namespaces(db)
    start = version_to_resume_from(namespaces)
    for i in range(60):
        namespaces.create(ctx(db), "", {"metadata": {"name": f"ns-{i}"}})
    for i in range(60):  # 600 changes in all, several per object
        for j in range(9):
            current = namespaces.get(ctx(db), "", f"ns-{i}")
            current["metadata"]["labels"] = {"round": str(j)}
            namespaces.update(ctx(db), "", f"ns-{i}", current)
    events, statements = watch(db, namespaces, start)
    # every namespace is seen, in its final state...
    final = {e["object"]["metadata"]["name"]: e["object"] for e in events}
    assert len(final) == 60
    assert all(obj["metadata"]["labels"]["round"] == "8" for obj in final.values())
    assert events[0]["type"] == "ADDED"
    # ...from a handful of queries (pages of 500 changes and one object read per page), not
    # one read per change; the feed's own polls during the half second come on top
    assert statements < 60, statements


def test_a_version_older_than_the_compacted_history_is_expired(db: Database) -> None:
    namespaces = Namespaces(db)
    first = namespaces.create(ctx(db), "", {"metadata": {"name": "first"}})
    old_rv = first["metadata"]["resourceVersion"]
    add(db, NS, "x", OLD)
    namespaces.create(ctx(db), "", {"metadata": {"name": "second"}})
    # the test's rows are younger than an hour: compact everything before the last
    compact(db, datetime.now(UTC) + timedelta(minutes=1))
    events, _ = watch(db, namespaces, old_rv)
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    assert status["message"].startswith(f"too old resource version: {old_rv} (")

    # a watch from the current version still works, and bookmarks carry the head
    rv = namespaces.list(ctx(db), "", ListOptions()).resource_version
    events, _ = watch(db, namespaces, rv, bookmarks=True)
    assert [e["type"] for e in events] == ["BOOKMARK"]
    assert events[0]["object"]["metadata"]["resourceVersion"] == rv


def test_a_resumed_watch_sends_each_changed_object_once(db: Database) -> None:
    namespaces = Namespaces(db)
    rv = version_to_resume_from(namespaces)
    gone = namespaces.create(ctx(db), "", {"metadata": {"name": "gone"}})
    kept = namespaces.create(ctx(db), "", {"metadata": {"name": "kept"}})
    for obj in (gone, kept, gone, kept):
        obj["metadata"].setdefault("labels", {})["n"] = str(
            int(obj["metadata"]["labels"].get("n", 0)) + 1
        )
        obj.update(namespaces.update(ctx(db), "", obj["metadata"]["name"], obj))
    namespaces.delete(ctx(db), "", "gone")
    events, _ = watch(db, namespaces, rv)
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    # added and deleted within the page: only the deletion; added and changed: one ADDED
    assert seen == [("ADDED", "kept"), ("DELETED", "gone")]
    assert events[0]["object"]["metadata"]["labels"]["n"] == "2"


# --- the shared feed on PostgreSQL ----------------------------------------------------------


def test_feed_waits_for_a_change_that_commits_after_a_later_one(pg: Database) -> None:
    """Sequence ids are handed out when a transaction writes, not when it commits: the feed
    must not pass id N while N is still uncommitted and N+1 is visible."""

    async def scenario() -> tuple[list[int], int, int]:
        feed = ChangeFeed(pg, poll_seconds=0.05, gap_grace=60.0)
        polls: list[int] = []  # reads of the log the feed has started
        read_log = feed._fetch

        def counted(after: int) -> tuple[list[Change], int]:
            polls.append(after)
            return read_log(after)

        feed._fetch = counted  # type: ignore[method-assign]
        async with feed.running():
            start = feed.head
            with pg.engine.connect() as slow:
                slow_tx = slow.begin()
                late = record_change(slow, NS, "", "late", "ADDED")
                with pg.write() as conn:
                    early = record_change(conn, NS, "", "early", "ADDED")
                # Wait until two reads that began after `early` committed have been handled
                # (a third has begun): the feed has seen `early`, and not `late`.
                seen_before = len(polls)
                deadline = time.monotonic() + 60
                while len(polls) < seen_before + 3:
                    assert time.monotonic() < deadline, "the feed stopped reading the log"
                    await asyncio.sleep(0.01)
                held = feed.since(start, [NS])
                assert held is not None and held[0] == [] and feed.head == start
                slow_tx.commit()
            while feed.head < early:
                await feed.wait_past(feed.head, 5.0)
            found = feed.since(start, [NS])
            assert found is not None
            return [c.id for c in found[0]], late, early

    seen, late, early = asyncio.run(scenario())
    assert late < early and seen == [late, early]


def test_feed_passes_a_hole_left_by_a_rolled_back_transaction(pg: Database) -> None:
    async def scenario() -> tuple[list[str], int]:
        feed = ChangeFeed(pg, poll_seconds=0.05, gap_grace=0.5)
        async with feed.running():
            start = feed.head
            with pg.engine.connect() as failed:
                tx = failed.begin()
                record_change(failed, NS, "", "rolled-back", "ADDED")
                tx.rollback()
            with pg.write() as conn:
                after = record_change(conn, NS, "", "after-the-hole", "ADDED")
            while feed.head < after:
                await feed.wait_past(feed.head, 5.0)
            found = feed.since(start, [NS])
            assert found is not None
            return [c.name for c in found[0]], after

    names, _ = asyncio.run(scenario())
    assert names == ["after-the-hole"]
