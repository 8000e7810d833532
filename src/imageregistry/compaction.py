"""Change-log compaction: keep `watch_history_seconds` of the `changes` log.

Every replica runs this loop; like scheduled pruning it acts only while it holds a database
lease (`change-log-compaction`), so one replica compacts at a time. A tick deletes the log
rows older than the retained window (`metadata.changelog.compact`, which keeps what
resourceVersions and the RBAC version need); watches from a version before the window
then answer `410 Expired` and clients list again. `watch_history_seconds: 0` keeps the
whole log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from datetime import timedelta

from imageregistry.background import running
from imageregistry.clock import Clock
from imageregistry.metadata.changelog import compact
from imageregistry.metadata.db import Database, DatabaseUnavailable
from imageregistry.metadata.leases import release_lease, take_lease

LEASE = "change-log-compaction"
MAX_INTERVAL = 60.0

log = logging.getLogger(__name__)


def interval_for(history_seconds: int) -> float:
    """Compact about twice per retained window, at most once a minute."""
    return min(MAX_INTERVAL, max(1.0, history_seconds / 2))


class ChangeLogCompactor:
    """One replica's compaction loop; `tick` is what tests drive."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        holder: str,
        history_seconds: int,
        interval: float,
    ) -> None:
        self._db = db
        self._clock = clock
        self._holder = holder
        self._history = timedelta(seconds=history_seconds)
        self._interval = interval

    async def tick(self) -> int | None:
        """Compact if this replica holds the lease; the number of rows deleted, else None."""
        now = self._clock()
        ttl = timedelta(seconds=self._interval * 3)
        if not await asyncio.to_thread(take_lease, self._db, LEASE, self._holder, now, ttl):
            return None
        removed = await asyncio.to_thread(compact, self._db, now - self._history)
        if removed:
            log.debug("change-log compaction removed %d rows", removed)
        return removed

    async def run_forever(self) -> None:
        failing = False  # log a failure once, not every tick (a read-only database)
        try:
            while True:
                try:
                    await self.tick()
                except Exception as exc:  # a failed tick must not end the loop
                    if not failing:  # a refusing database needs no traceback: it says why
                        expected = isinstance(exc, DatabaseUnavailable)
                        log.warning("change-log compaction failed: %s", exc, exc_info=not expected)
                    failing = True
                else:
                    if failing:
                        log.warning("change-log compaction works again")
                    failing = False
                await asyncio.sleep(self._interval)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(release_lease, self._db, LEASE, self._holder)


@contextlib.asynccontextmanager
async def compacting_change_log(
    db: Database, clock: Clock, history_seconds: int
) -> AsyncIterator[None]:
    """Run this replica's compaction loop for the lifetime of the server
    (`history_seconds` is `watch_history_seconds`; 0 or less keeps the whole log)."""
    if history_seconds <= 0:
        yield
        return
    holder = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    compactor = ChangeLogCompactor(
        db, clock, holder, history_seconds, interval_for(history_seconds)
    )
    async with running(compactor.run_forever()):
        yield
