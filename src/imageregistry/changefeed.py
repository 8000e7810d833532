"""One poller of the `changes` log per process, shared by every watch; and the watch caps.

Before this, each watch polled the log on its own every 0.25 s and replayed history with one
database read per change, so a few hundred watches from one tenant starved every other
request. Now:

- `ChangeFeed` is the only reader of new changes in a process. Its task (started and stopped
  by the server's lifespan) reads new rows in pages and keeps the most recent ones in
  memory; watches take their live events from there and wait on it, so an idle watch costs
  no query at all and a change costs one query however many watches see it. A watch further
  behind than the memory reaches reads the log itself, one query per page, holding one of a
  few *load slots* (also used to read the objects of a page), so replays cannot take more
  than a couple of the server's worker threads.
- `WatchSlots` caps the open watches per user and per process; beyond the cap the API
  answers `429 TooManyRequests` with `Retry-After`.

Several replicas each run their own feed over the shared table. On PostgreSQL, ids come
from a sequence in the order transactions *started* writing, not the order they committed,
so a row may appear after a higher id is already visible. The feed therefore does not pass
a hole in the ids until it has waited `gap_grace` seconds for it to fill (a rolled-back
transaction leaves a permanent hole). On SQLite a row's id is assigned under the single
writer lock, so holes cannot appear and nothing waits.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from imageregistry.background import running
from imageregistry.metadata.changelog import (
    Change,
    changes_after,
    compaction_mark,
    latest_change_id,
)
from imageregistry.metadata.db import Database

log = logging.getLogger(__name__)


class FeedNotRunning(RuntimeError):
    """The feed's task is not running (outside the server's lifespan)."""


@dataclass
class _Live:
    """The feed's state while its task runs (asyncio objects belong to that event loop)."""

    head: int  # every change with id <= head has been taken in (or given up as a hole)
    floor: int  # `ids` holds every change with floor < id <= head
    advanced: asyncio.Event
    loads: asyncio.Semaphore
    ids: list[int] = field(default_factory=list)
    rows: list[Change] = field(default_factory=list)
    hole_at: int = -1  # the head at which a hole was first seen
    hole_since: float = 0.0


class ChangeFeed:
    """The process's shared change-log poller; see the module docstring."""

    def __init__(
        self,
        db: Database,
        *,
        poll_seconds: float = 0.25,
        page: int = 1000,
        memory: int = 20_000,
        gap_grace: float = 5.0,
        load_slots: int = 2,
    ) -> None:
        self._db = db
        self._poll_seconds = poll_seconds
        self._page = page
        self._memory = memory
        self._gap_grace = 0.0 if db.is_sqlite else gap_grace
        self._load_slots = load_slots
        self._live: _Live | None = None
        self._failing = False

    # --- lifecycle ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Poll for as long as the block lasts (the server's lifespan)."""
        head = await asyncio.to_thread(self._latest)
        live = _Live(head, head, asyncio.Event(), asyncio.Semaphore(self._load_slots))
        self._live = live
        try:
            async with running(self._poll_forever(live)):
                yield
        finally:
            self._live = None
            live.advanced.set()  # wake waiting watches; they find the feed gone

    @property
    def is_running(self) -> bool:
        return self._live is not None

    def _state(self) -> _Live:
        if self._live is None:
            raise FeedNotRunning("the change feed is not running")
        return self._live

    # --- what watches use --------------------------------------------------------------

    @property
    def head(self) -> int:
        return self._state().head

    def since(
        self, after: int, resources: Sequence[str], namespace: str = ""
    ) -> tuple[list[Change], int] | None:
        """The changes after `after` of these resources (in one namespace, if given) and the
        head they run to; None when `after` is older than what the feed holds in memory."""
        live = self._state()
        if after < live.floor:
            return None
        start = bisect.bisect_right(live.ids, after)
        wanted = set(resources)
        found = [
            c
            for c in live.rows[start:]
            if c.resource in wanted and (not namespace or c.namespace == namespace)
        ]
        return found, live.head

    async def wait_past(self, after: int, timeout: float) -> None:
        """Return once the head moves past `after`, or after `timeout` seconds."""
        live = self._state()
        if live.head > after or timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await live.advanced.wait()

    @contextlib.asynccontextmanager
    async def load_slot(self) -> AsyncIterator[None]:
        """Hold one of the few slots watches read the database under."""
        async with self._state().loads:
            yield

    # --- the poller --------------------------------------------------------------------

    def _latest(self) -> int:
        with self._db.read() as conn:
            return latest_change_id(conn)

    def _fetch(self, after: int) -> tuple[list[Change], int]:
        with self._db.read() as conn:
            return changes_after(conn, after, self._page), compaction_mark(conn)

    async def _poll_forever(self, live: _Live) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                rows, mark = await asyncio.to_thread(self._fetch, live.head)
            except Exception:
                if not self._failing:
                    log.warning("reading the change log failed; watches wait", exc_info=True)
                self._failing = True
                rows, mark = [], 0
            else:
                if self._failing:
                    log.warning("reading the change log works again")
                self._failing = False
            taken = self._take(live, rows, loop.time())
            if taken:
                self._append(live, taken)
            self._forget_compacted(live, mark)
            if not taken or len(rows) < self._page:
                await asyncio.sleep(self._poll_seconds)

    def _take(self, live: _Live, rows: list[Change], now: float) -> list[Change]:
        """The rows to pass on, stopping at a hole in the ids younger than `gap_grace`."""
        taken: list[Change] = []
        head = live.head
        for row in rows:
            if row.id != head + 1 and self._gap_grace > 0:
                if live.hole_at != head:
                    live.hole_at, live.hole_since = head, now
                if now - live.hole_since < self._gap_grace:
                    break
            taken.append(row)
            head = row.id
        return taken

    def _append(self, live: _Live, taken: list[Change]) -> None:
        live.ids.extend(c.id for c in taken)
        live.rows.extend(taken)
        live.head = taken[-1].id
        excess = len(live.ids) - self._memory
        if excess > self._memory // 4:  # trim in steps, not on every poll
            live.floor = live.ids[excess - 1]
            del live.ids[:excess]
            del live.rows[:excess]
        advanced, live.advanced = live.advanced, asyncio.Event()
        advanced.set()

    @staticmethod
    def _forget_compacted(live: _Live, mark: int) -> None:
        """Serve no version the log has compacted away, so that a watch from before the
        kept history is answered the same by every replica (from the log: 410 Expired)."""
        floor = min(mark, live.head)
        if floor > live.floor:
            cut = bisect.bisect_right(live.ids, floor)
            del live.ids[:cut]
            del live.rows[:cut]
            live.floor = floor


class WatchLimitExceeded(Exception):
    """A new watch would exceed a cap; the message says which."""


class WatchSlot:
    """One admitted watch; `release` (idempotent) frees its place."""

    def __init__(self, slots: WatchSlots, user: str) -> None:
        self._slots = slots
        self.user = user
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._slots._release(self.user)


class WatchSlots:
    """Caps on concurrent watches in this process: per user and in total.

    Only the event loop thread admits and releases, so plain counters suffice."""

    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self._open = 0
        self._by_user: dict[str, int] = {}

    @property
    def open(self) -> int:
        return self._open

    def admit(self, user: str) -> WatchSlot:
        if self._open >= self.total:
            raise WatchLimitExceeded(
                f"the server has reached its limit of {self.total} concurrent watches"
            )
        held = self._by_user.get(user, 0)
        if held >= self.per_user:
            raise WatchLimitExceeded(
                f'user "{user}" has reached the limit of {self.per_user} concurrent watches'
            )
        self._open += 1
        self._by_user[user] = held + 1
        return WatchSlot(self, user)

    def _release(self, user: str) -> None:
        self._open -= 1
        left = self._by_user.get(user, 1) - 1
        if left > 0:
            self._by_user[user] = left
        else:
            self._by_user.pop(user, None)
