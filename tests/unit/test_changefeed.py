"""Watch caps and the shared change feed's memory, in-process (SQLite)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from imageregistry.changefeed import ChangeFeed, FeedNotRunning, WatchLimitExceeded, WatchSlots
from imageregistry.metadata.db import Database, record_change
from imageregistry.metadata.engine import open_engine


def test_a_user_beyond_their_cap_is_refused_and_others_are_not() -> None:
    slots = WatchSlots(per_user=2, total=3)
    held = [slots.admit("mallory"), slots.admit("mallory")]
    with pytest.raises(WatchLimitExceeded, match=r'user "mallory" .* limit of 2'):
        slots.admit("mallory")
    alice = slots.admit("alice")
    with pytest.raises(WatchLimitExceeded, match="limit of 3 concurrent watches"):
        slots.admit("bob")
    held[0].release()
    held[0].release()  # releasing twice frees one place, not two
    assert slots.open == 2
    slots.admit("bob")
    with pytest.raises(WatchLimitExceeded):
        slots.admit("carol")
    alice.release()
    held[1].release()
    assert slots.open == 1
    slots.admit("mallory")


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(open_engine(f"sqlite:///{tmp_path / 'feed.db'}"))


def change(db: Database, name: str, resource: str = "namespaces", namespace: str = "") -> int:
    with db.write() as conn:
        return record_change(conn, resource, namespace, name, "ADDED")


def test_feed_serves_recent_changes_from_memory_and_sends_older_ones_to_the_log(
    db: Database,
) -> None:
    before = change(db, "before")

    async def scenario() -> None:
        feed = ChangeFeed(db, poll_seconds=0.02, memory=8)
        with pytest.raises(FeedNotRunning):
            feed.since(0, ["namespaces"])
        async with feed.running():
            start = feed.head
            assert start == before
            assert feed.since(before - 1, ["namespaces"]) is None  # older than the memory
            made = [change(db, f"n{i}") for i in range(3)]
            change(db, "other", "serviceaccounts", "team")
            while feed.head < made[-1] + 1:
                await feed.wait_past(feed.head, 5.0)
            found = feed.since(start, ["namespaces"])
            assert found is not None
            assert [c.id for c in found[0]] == made and found[1] == made[-1] + 1
            scoped = feed.since(start, ["serviceaccounts"], "team")
            assert scoped is not None and [c.name for c in scoped[0]] == ["other"]
            # many more changes than the memory holds: the oldest are forgotten
            last = 0
            for i in range(20):
                last = change(db, f"m{i}")
            while feed.head < last:
                await feed.wait_past(feed.head, 5.0)
            assert feed.since(start, ["namespaces"]) is None
            recent = feed.since(last - 1, ["namespaces"])
            assert recent is not None and [c.id for c in recent[0]] == [last]
        assert not feed.is_running

    asyncio.run(scenario())
    db.dispose()
