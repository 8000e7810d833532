"""Delivery of the outbox: one sender per server (process group), claims shared by replicas.

Every worker process runs `running()`, which flushes its pull events; the worker holding
the flock on `DATA_DIR/run/notifications.lock` also sends (the others try to take the
lock every few seconds, so a worker that dies hands sending on within that time). Between
replicas, nothing but the claims of `metadata.outbox` is shared: each replica's sender
leases the heads of the repository queues it delivers, so any number of senders deliver
each row to its endpoint at least once, one row of a repository at a time, in order.

A round, per endpoint: claim up to `CLAIM_BATCH` due queue heads with up to `RUN` rows
queued behind each (one claim transaction for a run, so a busy repository is not held to
one event per database round trip), POST each row as its own envelope (distribution
sends one event per request as well), a repository's rows one after the other and
repositories concurrently; rows answered 2xx or 3xx are removed, the first failure (an
error status, or no answer within the endpoint's `timeout`) counts on its row, which
waits until its retry time (`Endpoint.retry_delay`), and gives the rest of the run back.
After a failure the endpoint is left alone until that time, so a receiver that is down
costs one request per backoff step, not one per repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import IO

import httpx

from imageregistry.metadata import outbox
from imageregistry.metadata.db import DatabaseUnavailable
from imageregistry.notifications.config import Endpoint
from imageregistry.notifications.events import MEDIA_TYPE, envelope
from imageregistry.notifications.notifier import Notifier
from imageregistry.observability.metrics import Metrics

log = logging.getLogger(__name__)
CLAIM_BATCH = 32  # repositories per claim
RUN = 16  # rows of one repository per claim, delivered one after the other
POLL_SECONDS = 0.5
LOCK_RETRY_SECONDS = 3.0
PENDING_SECONDS = 5.0
PULL_FLUSH_SECONDS = 0.5


class SenderLock:
    """The flock that makes one worker of a process group the sender."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def try_take(self) -> bool:
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


class Sender:
    def __init__(
        self,
        notifier: Notifier,
        metrics: Metrics | None,
        holder: str | None = None,
    ) -> None:
        self.notifier = notifier
        self.db = notifier.db
        self.metrics = metrics
        self.holder = holder or f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._paused: dict[str, float] = {}  # endpoint -> monotonic time to try again

    async def deliver_round(self, client: httpx.AsyncClient) -> int:
        """One claim-and-deliver pass over every endpoint; the rows delivered."""
        done = 0
        for endpoint in self.notifier.endpoints:
            if self._paused.get(endpoint.name, 0.0) > time.monotonic():
                continue
            done += await self._endpoint_round(client, endpoint)
        return done

    async def _endpoint_round(self, client: httpx.AsyncClient, endpoint: Endpoint) -> int:
        now = self.notifier.clock()
        lease = timedelta(seconds=endpoint.timeout * RUN + 30)  # covers a whole run
        rows = await asyncio.to_thread(
            outbox.claim,
            self.db,
            endpoint.name,
            self.holder,
            now,
            now + lease,
            CLAIM_BATCH,
            RUN,
        )
        runs: dict[str, list[outbox.Claimed]] = {}
        for row in rows:
            runs.setdefault(row.repository, []).append(row)
        results = await asyncio.gather(
            *(self._deliver_run(client, endpoint, run) for run in runs.values())
        )
        return sum(results)

    async def _deliver_run(
        self, client: httpx.AsyncClient, endpoint: Endpoint, run: list[outbox.Claimed]
    ) -> int:
        """One repository's claimed rows, one request each, in order; the first failure
        ends the run (the rest is given back untried)."""
        sent: list[int] = []
        try:
            for index, row in enumerate(run):
                error = await self._post(client, endpoint, row.payload)
                if error is None:
                    sent.append(row.id)
                    if self.metrics is not None:
                        self.metrics.notifications_sent.labels(endpoint.name).inc()
                    continue
                await self._failed(endpoint, row, error)
                rest = [r.id for r in run[index + 1 :]]
                await asyncio.to_thread(outbox.unclaim, self.db, rest, self.holder)
                break
        finally:
            await asyncio.to_thread(outbox.delivered, self.db, sent, self.holder)
        return len(sent)

    async def _failed(self, endpoint: Endpoint, row: outbox.Claimed, error: str) -> None:
        failures = row.attempts + 1
        delay = endpoint.retry_delay(failures)
        log.warning(
            "notification endpoint %s: delivery of event %s failed (attempt %d): %s;"
            " next try in %.1fs",
            endpoint.name,
            row.event_id,
            failures,
            error,
            delay,
        )
        if self.metrics is not None:
            self.metrics.notifications_failed.labels(endpoint.name).inc()
        next_attempt = self.notifier.clock() + timedelta(seconds=delay)
        await asyncio.to_thread(outbox.failed, self.db, row.id, self.holder, next_attempt, error)
        self._paused[endpoint.name] = max(
            self._paused.get(endpoint.name, 0.0), time.monotonic() + delay
        )

    @staticmethod
    async def _post(client: httpx.AsyncClient, endpoint: Endpoint, payload: str) -> str | None:
        """None when the endpoint took the envelope, else why not (never a header value)."""
        headers = [("Content-Type", MEDIA_TYPE), *endpoint.headers]
        try:
            response = await client.post(
                endpoint.url,
                content=envelope([payload]),
                headers=headers,
                timeout=endpoint.timeout,
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {str(exc)[:200]}"
        if 200 <= response.status_code < 400:
            return None
        return f"HTTP {response.status_code}"

    def report_pending(self) -> None:
        if self.metrics is None:
            return
        counts = outbox.pending(self.db)
        for endpoint in self.notifier.endpoints:
            self.metrics.notifications_pending.labels(endpoint.name).set(
                counts.get(endpoint.name, 0)
            )


async def _send_loop(sender: Sender, lock: SenderLock, wake: asyncio.Event) -> None:
    async with httpx.AsyncClient(follow_redirects=False) as client:
        next_pending = 0.0
        while True:
            if not lock.try_take():
                await asyncio.sleep(LOCK_RETRY_SECONDS)
                continue
            try:
                done = await sender.deliver_round(client)
                if time.monotonic() >= next_pending:
                    await asyncio.to_thread(sender.report_pending)
                    next_pending = time.monotonic() + PENDING_SECONDS
            except DatabaseUnavailable:
                done = 0
            except Exception:
                log.exception("notification sender round failed")
                done = 0
            if done:
                continue
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), POLL_SECONDS)


async def _flush_loop(notifier: Notifier) -> None:
    while True:
        await asyncio.sleep(PULL_FLUSH_SECONDS)
        await asyncio.to_thread(notifier.flush_pulls)


@contextlib.asynccontextmanager
async def running(
    notifier: Notifier, metrics: Metrics | None, run_dir: Path
) -> AsyncIterator[None]:
    """The pull flusher of this worker, and the sender while this worker holds the lock."""
    if not notifier.enabled:
        yield
        return
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def nudge() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(wake.set)

    notifier.wake = nudge
    lock = SenderLock(run_dir / "notifications.lock")
    sender = Sender(notifier, metrics)
    tasks = [
        asyncio.create_task(_send_loop(sender, lock, wake)),
        asyncio.create_task(_flush_loop(notifier)),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        notifier.wake = lambda: None
        with contextlib.suppress(Exception):
            await asyncio.to_thread(notifier.flush_pulls)
        if lock.held:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(outbox.release, sender.db, sender.holder)
        lock.release()
