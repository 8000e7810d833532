"""Scheduled pruning: run the `ImagePruner` `cluster` configuration on its cron schedule.

Every replica runs this loop; a row in `leases` makes sure only one of them acts at a
time (docs/architecture.md#built-for-several-replicas): a replica acts only while it
holds the unexpired `image-pruner` lease, renewing it on each tick. A tick that finds the
schedule due for the current minute, and no run recorded for that minute in the
pruner's status, runs a confirmed prune with the configured retention and then registry
GC, and writes the outcome as status conditions plus a bounded run history
(`successfulJobsHistoryLimit`, `failedJobsHistoryLimit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from imageregistry import apigroups
from imageregistry.auth.authorizer import IMAGE_GROUP
from imageregistry.auth.identity import Attributes, authenticated
from imageregistry.background import running
from imageregistry.clock import Clock, parse_rfc3339, rfc3339
from imageregistry.metadata.db import Database
from imageregistry.metadata.image_pruner import (
    ImagePrunerRow,
    load_image_pruner,
    save_image_pruner_status,
)
from imageregistry.metadata.leases import release_lease, take_lease
from imageregistry.prune.cron import CronSchedule, InvalidSchedule
from imageregistry.prune.options import PruneOptions, parse_duration
from imageregistry.prune.service import Pruner

OPERATOR_GROUP = apigroups.OPERATOR
LEASE = "image-pruner"
SCHEDULED_PRUNER = "system:image-pruner"  # who a scheduled run prunes as


@dataclass(frozen=True)
class ScheduledPruneHealth:
    last_success: datetime | None
    consecutive_failures: int


def scheduled_prune_health(db: Database) -> ScheduledPruneHealth:
    """What the metrics report of the scheduled pruner, from its recorded status."""
    pruner = load_image_pruner(db)
    status = pruner.status if pruner is not None else {}
    last = None
    with contextlib.suppress(KeyError, ValueError):
        last = parse_rfc3339(str(status["lastSuccessfulTime"]))
    return ScheduledPruneHealth(last, int(status.get("consecutiveFailures") or 0))


def options_from_spec(spec: dict[str, Any]) -> PruneOptions:
    return PruneOptions(
        keep_tag_revisions=int(spec.get("keepTagRevisions", 3)),
        keep_younger_than=parse_duration(str(spec.get("keepYoungerThanDuration", "60m"))),
        ignore_invalid_refs=bool(spec.get("ignoreInvalidImageReferences", True)),
        prune_registry=bool(spec.get("pruneRegistry", True)),
    )


def _condition(kind: str, ok: bool, reason: str, message: str, now: datetime) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": rfc3339(now),
    }


class ImagePrunerScheduler:
    """One replica's scheduler loop; `tick` is the unit tests drive with a fake clock."""

    def __init__(
        self,
        db: Database,
        pruner: Pruner,
        clock: Clock,
        holder: str,
        interval: float = 20.0,
        on_run: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._db = db
        self._pruner = pruner
        self._clock = clock
        self._holder = holder
        self._interval = interval
        self._on_run = on_run  # told each run's history entry (the audit log)

    def _due(self, pruner: ImagePrunerRow, minute: datetime) -> bool:
        spec = pruner.spec
        if spec.get("suspend") or not spec.get("schedule"):
            return False
        try:
            schedule = CronSchedule.parse(str(spec["schedule"]))
        except InvalidSchedule:
            return False
        last = pruner.status.get("lastScheduledMinute", "")
        return schedule.matches(minute) and last != minute.isoformat()

    async def tick(self) -> dict[str, Any] | None:
        """Run the pruner if due and this replica holds the lease; return the new status."""
        now = self._clock()
        ttl = timedelta(seconds=self._interval * 3)
        if not await asyncio.to_thread(take_lease, self._db, LEASE, self._holder, now, ttl):
            return None
        pruner = await asyncio.to_thread(load_image_pruner, self._db)
        minute = now.replace(second=0, microsecond=0)
        if pruner is None or not self._due(pruner, minute):
            return None
        status = await self._run(pruner, now)
        status["lastScheduledMinute"] = minute.isoformat()
        await asyncio.to_thread(save_image_pruner_status, self._db, status)
        if self._on_run is not None:
            self._on_run(status["lastRun"])
        return status

    async def _run(self, pruner: ImagePrunerRow, now: datetime) -> dict[str, Any]:
        spec, previous = pruner.spec, dict(pruner.status)
        entry: dict[str, Any] = {"time": rfc3339(now)}
        try:
            options = options_from_spec(spec)
            outcome = await asyncio.to_thread(self._pruner.prune, options, SCHEDULED_PRUNER, False)
            entry.update(runID=outcome.run_id, summary=outcome.result.summary())
            failed = len(outcome.result.failures)
            if options.prune_registry:
                gc = await self._pruner.gc(dry_run=False)
                entry["registryGC"] = f"Deleted {len(gc.blobs)} blobs, freed {gc.size} bytes"
                failed += len(gc.failed)
            entry["succeeded"] = failed == 0
            message = entry["summary"] + ("" if not failed else f"; {failed} step(s) failed")
        except Exception as exc:  # recorded in status; the loop goes on
            entry.update(succeeded=False, summary=str(exc))
            message = str(exc)
        return self._status(spec, previous, entry, message, now)

    def _status(
        self,
        spec: dict[str, Any],
        previous: dict[str, Any],
        entry: dict[str, Any],
        message: str,
        now: datetime,
    ) -> dict[str, Any]:
        history = [entry, *(previous.get("history") or [])]
        ok_limit = int(spec.get("successfulJobsHistoryLimit", 3))
        failed_limit = int(spec.get("failedJobsHistoryLimit", 1))
        ok_runs = [h for h in history if h.get("succeeded")][:ok_limit]
        failed_runs = [h for h in history if not h.get("succeeded")][:failed_limit]
        kept = sorted(ok_runs + failed_runs, key=lambda h: str(h["time"]), reverse=True)
        succeeded = bool(entry.get("succeeded"))
        failures = 0 if succeeded else int(previous.get("consecutiveFailures") or 0) + 1
        last_success = entry["time"] if succeeded else previous.get("lastSuccessfulTime")
        return {
            "conditions": [
                _condition("Available", True, "Ready", "scheduled pruning is configured", now),
                _condition(
                    "Scheduled", not spec.get("suspend"), "Scheduled", spec.get("schedule", ""), now
                ),
                _condition(
                    "Failed", not succeeded, "Failed" if not succeeded else "Complete", message, now
                ),
            ],
            "lastRun": entry,
            "history": kept,
            # Like a CronJob's; the metrics' alert on failing schedules reads both.
            "consecutiveFailures": failures,
            **({"lastSuccessfulTime": last_success} if last_success else {}),
        }

    async def run_forever(self) -> None:
        try:
            while True:
                with contextlib.suppress(Exception):  # a failed tick must not end the loop
                    await self.tick()
                await asyncio.sleep(self._interval)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(release_lease, self._db, LEASE, self._holder)


class AuditRecorder(Protocol):
    """The audit log's way in for changes no request made (`observability.audit`)."""

    def record_internal(self, attrs: Attributes, code: int, result: Any) -> None: ...


def auditing(audit: AuditRecorder | None) -> Callable[[dict[str, Any]], None] | None:
    """A scheduled run has no request to be audited with: it is written to the audit log
    as the `create imageprunes` it amounts to, by the pruner's identity, with the run's
    history entry as the response."""
    if audit is None:
        return None

    def record(entry: dict[str, Any]) -> None:
        user = authenticated(SCHEDULED_PRUNER)
        attrs = Attributes.for_resource(
            user, "create", IMAGE_GROUP, "imageprunes", name=str(entry.get("runID") or "")
        )
        audit.record_internal(attrs, 201 if entry.get("succeeded") else 500, entry)

    return record


@contextlib.asynccontextmanager
async def scheduled_pruning(
    db: Database,
    pruner: Pruner,
    clock: Clock,
    audit: AuditRecorder | None,
    interval: float = 20.0,
) -> AsyncIterator[None]:
    """Run this replica's scheduler loop for the lifetime of the server."""
    holder = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    scheduler = ImagePrunerScheduler(db, pruner, clock, holder, interval, auditing(audit))
    async with running(scheduler.run_forever()):
        yield
