"""Prune, undo and GC over one database and blob store: the API resources and the scheduler
call these; `server.py` builds the one `Pruner` (through `Services`) and hands it to both.

`Pruner.prune` loads the snapshot, plans and executes in one database transaction, so the plan the
caller sees is exactly what was applied (docs/architecture.md#plans-then-actions). A dry run reads
in a read transaction and executes with describing deleters; a confirmed run deletes through
`SqlPruneDeleter` and records a `prune_runs` row an undo can restore from. On PostgreSQL, confirmed
prunes serialize on a transaction-scoped advisory lock; on SQLite the write transaction already does
(BEGIN IMMEDIATE).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from imageregistry.clock import Clock
from imageregistry.metadata.db import Database
from imageregistry.metadata.gc_queries import SqlBlobChecks, SqlGcStore
from imageregistry.metadata.prune_queries import SqlPruneDeleter, load_snapshot
from imageregistry.metadata.prune_runs import (
    RestoreCheck,
    RestoreResult,
    UndoRefused,
    get_run,
    lock_confirmed_prunes,
    new_run_id,
    record_run,
    restore_run,
)
from imageregistry.metadata.quota import (
    QuotaExceeded,
    UsageGuard,
    namespaces_holding,
    namespaces_with_quotas,
    released,
    run_namespaces,
    usage_of,
)
from imageregistry.metadata.tag_policies import ImmutableTag, immutable_tags
from imageregistry.prune.executor import (
    DescribingImageDeleter,
    DescribingTagEventDeleter,
    PruneResult,
    Step,
    execute_prune,
)
from imageregistry.prune.gc import GcResult, GcSettings, StoreBlobDeleter, plan_gc, run_gc
from imageregistry.prune.inuse import InUse, gather_in_use, host_of
from imageregistry.prune.options import PruneOptions
from imageregistry.prune.planner import PrunePlan, plan_prune_keeping
from imageregistry.prune.reconcile import ReconcileResult, reconcile
from imageregistry.prune.verify import VerifyPage, verify_page
from imageregistry.storage.driver import BlobStore


@dataclass(frozen=True)
class PruneOutcome:
    plan: PrunePlan
    result: PruneResult
    in_use: InUse
    run_id: str = ""
    # A confirmed run: per namespace, the quota usage it released (resource -> amount).
    released: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # Immutable tags (ImageTagPolicy) whose current image or item the plan kept for them.
    immutable_kept: tuple[ImmutableTag, ...] = ()


class RunObserver(Protocol):
    """Told about every confirmed prune and GC run (`observability.metrics.Metrics`)."""

    def gc_finished(self, result: GcResult | None, seconds: float) -> None: ...

    def prune_finished(self, images: int, failed: bool, seconds: float) -> None: ...


class Pruner:
    """Image pruning, undo and registry GC over one database and blob store."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        clock: Clock,
        gc_settings: GcSettings,
        registry_hosts: Iterable[str] = (),
        observer: RunObserver | None = None,
    ) -> None:
        self._observer = observer
        self._db = db
        self._blobs = blobs
        self._clock = clock
        self._gc_settings = gc_settings
        self._hosts = tuple(registry_hosts)

    def in_use(self, options: PruneOptions) -> InUse:
        hosts = [host_of(options.registry_url)] if options.registry_url else list(self._hosts)
        return gather_in_use(options.keep_referenced, hosts, options.ignore_invalid_refs)

    def prune(
        self,
        options: PruneOptions,
        user: str,
        dry_run: bool,
        progress: Callable[[Step], None] | None = None,
    ) -> PruneOutcome:
        """Plan and (unless `dry_run`) apply; raises `InvalidReferences` for bad refs."""
        if dry_run or self._observer is None:
            return self._prune(options, user, dry_run, progress)
        started = time.perf_counter()
        try:
            outcome = self._prune(options, user, dry_run, progress)
        except Exception:
            self._observer.prune_finished(0, True, time.perf_counter() - started)
            raise
        images = sum(1 for s in outcome.result.steps if s.ok and s.kind == "image")
        failed = bool(outcome.result.failures)
        self._observer.prune_finished(images, failed, time.perf_counter() - started)
        return outcome

    def _prune(
        self,
        options: PruneOptions,
        user: str,
        dry_run: bool,
        progress: Callable[[Step], None] | None,
    ) -> PruneOutcome:
        in_use = self.in_use(options)
        now = self._clock()
        if dry_run:
            with self._db.read() as conn:
                plan, kept = plan_prune_keeping(
                    load_snapshot(conn), options, in_use, now, immutable_tags(conn)
                )
            result = execute_prune(
                plan, DescribingTagEventDeleter(), DescribingImageDeleter(), True, progress
            )
            return PruneOutcome(plan, result, in_use, immutable_kept=kept)
        with self._db.write() as conn:
            lock_confirmed_prunes(conn)
            # Immutable tags are read in this transaction: a tag moved or a policy written
            # meanwhile waits for it (or was committed before and is seen).
            plan, kept = plan_prune_keeping(
                load_snapshot(conn), options, in_use, now, immutable_tags(conn)
            )
            # What the run releases, for the namespaces under a quota (each measured twice
            # from scratch, so namespaces nobody limits cost nothing here).
            touched = namespaces_with_quotas(
                conn, {s.namespace for s in plan.streams} | namespaces_holding(conn, plan.images)
            )
            before = usage_of(conn, touched)
            deleter = SqlPruneDeleter(conn)
            result = execute_prune(plan, deleter, deleter, False, progress)
            freed = released(before, usage_of(conn, touched))
            run_id = ""
            removed = deleter.removed()
            if removed["tagEvents"] or removed["images"]:
                run_id = new_run_id(now)
                summary = {"line": result.summary(), "failed": len(result.failures)}
                record_run(conn, run_id, user, options.to_spec(), removed, summary, now)
        return PruneOutcome(plan, result, in_use, run_id, freed, kept)

    def undo(
        self, run_id: str, check: RestoreCheck | None = None, dry_run: bool = False
    ) -> RestoreResult:
        """Restore a confirmed run (or with `dry_run` say what would be restored, changing
        nothing); raises `UndoRefused` / `RunNotFound` either way. `check` sees every
        (namespace, stream, digest) the restore would put back first, and may refuse."""
        if dry_run:
            with self._db.read() as conn:
                return restore_run(conn, run_id, self._clock(), False, check, dry_run=True)
        with self._db.write() as conn:
            run = get_run(conn, run_id)
            # Restored images count against the namespaces' quotas again: an undo that
            # would pass a limit is refused whole (the transaction rolls back).
            guard = UsageGuard(conn, run_namespaces(run.removed) if run else ())
            result = restore_run(
                conn, run_id, self._clock(), lock=not self._db.is_sqlite, check=check
            )
            try:
                guard.check(conn)
            except QuotaExceeded as exc:
                raise UndoRefused(f"prune run {run_id} cannot be undone: {exc}") from None
            return result

    async def gc(self, dry_run: bool) -> GcResult:
        store = SqlGcStore(self._db, self._gc_settings.blob_grace)
        now = self._clock()
        if dry_run:
            return await plan_gc(store, self._blobs, now, self._gc_settings)
        started = time.perf_counter()
        result: GcResult | None = None
        try:
            result = await run_gc(
                store, StoreBlobDeleter(self._blobs), self._blobs, now, self._gc_settings
            )
            return result
        finally:
            if self._observer is not None:
                self._observer.gc_finished(result, time.perf_counter() - started)

    async def verify(self, after: str, limit: int, dry_run: bool) -> VerifyPage:
        """One page of `ac adm registry verify` (see `prune.verify`)."""
        return await verify_page(SqlBlobChecks(self._db), self._blobs, after, limit, not dry_run)

    async def reconcile(self, dry_run: bool) -> ReconcileResult:
        store = SqlGcStore(self._db, self._gc_settings.blob_grace)
        return await reconcile(
            store, self._blobs, self._clock(), self._gc_settings.reconcile_grace, dry_run
        )
