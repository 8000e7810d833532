"""What the metrics report of pruning, from the real schema (SQLite): the scheduled
pruner's status counts consecutive failed runs and keeps the last success time, and the
prune / GC counters move with confirmed runs only."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from prometheus_client import generate_latest
from sqlalchemy import update

from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import open_engine
from imageregistry.metadata.image_pruner import PRUNER_NAME, PRUNER_RESOURCE
from imageregistry.metadata.tables import objects
from imageregistry.observability.metrics import Metrics
from imageregistry.observability.sources import publish_totals
from imageregistry.prune.gc import GcSettings
from imageregistry.prune.options import PruneOptions
from imageregistry.prune.scheduler import ImagePrunerScheduler, scheduled_prune_health
from imageregistry.prune.service import Pruner
from tests.contract.test_prune_gc import NOW, Seed, _store_pruner, seed_stream


def sample(metrics: Metrics, line_start: str) -> float:
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not exported")


def set_spec(db: Database, spec: dict[str, object]) -> None:
    with db.write() as conn:
        body = (
            conn.execute(objects.select().where(objects.c.resource == PRUNER_RESOURCE))
            .one()
            ._mapping["body"]
        )
        conn.execute(
            update(objects)
            .where(objects.c.resource == PRUNER_RESOURCE, objects.c.name == PRUNER_NAME)
            .values(body={**body, "spec": spec})
        )


def test_failing_schedules_are_counted_until_one_succeeds(tmp_path: Path) -> None:
    db = Database(open_engine(f"sqlite:///{tmp_path / 'registry.db'}"))
    seed = Seed(db)
    seed_stream(seed)
    good = {"schedule": "* * * * *", "keepTagRevisions": 5, "keepYoungerThanDuration": "72h"}
    bad = {**good, "keepYoungerThanDuration": "soon"}
    _store_pruner(db, good)
    scheduler = ImagePrunerScheduler(db, seed.pruner(), seed.clock, "replica-a")
    metrics = Metrics()

    seed.clock_now = NOW.replace(minute=0)
    assert asyncio.run(scheduler.tick()) is not None
    publish_totals(metrics, db)
    success = NOW.replace(minute=0).timestamp()
    assert sample(metrics, "imageregistry_scheduled_prune_last_success_timestamp_seconds") == (
        success
    )
    assert sample(metrics, "imageregistry_scheduled_prune_consecutive_failures") == 0
    assert sample(metrics, "imageregistry_images") == 5  # the prune left five images

    set_spec(db, bad)
    for minute in (1, 2):
        seed.clock_now = NOW.replace(minute=minute)
        status = asyncio.run(scheduler.tick())
        assert status is not None and status["lastRun"]["succeeded"] is False
    health = scheduled_prune_health(db)
    assert health.consecutive_failures == 2
    assert health.last_success is not None and health.last_success.timestamp() == success
    publish_totals(metrics, db)
    assert sample(metrics, "imageregistry_scheduled_prune_consecutive_failures") == 2

    set_spec(db, good)
    seed.clock_now = NOW.replace(minute=3)
    assert asyncio.run(scheduler.tick()) is not None
    assert scheduled_prune_health(db).consecutive_failures == 0
    db.dispose()


def test_confirmed_runs_move_the_counters_and_dry_runs_do_not(tmp_path: Path) -> None:
    db = Database(open_engine(f"sqlite:///{tmp_path / 'registry.db'}"))
    seed = Seed(db)
    seed_stream(seed)
    metrics = Metrics()
    pruner = Pruner(
        db,
        seed.store,
        seed.clock,
        GcSettings(upload_max_age=timedelta(days=1), blob_grace=timedelta(0)),
        ["reg.test"],
        metrics,
    )
    options = PruneOptions(keep_tag_revisions=5)
    pruner.prune(options, "tester", dry_run=True)
    asyncio.run(pruner.gc(dry_run=True))
    assert sample(metrics, "imageregistry_prune_duration_seconds_count") == 0
    assert sample(metrics, "imageregistry_gc_duration_seconds_count") == 0
    pruner.prune(options, "tester", dry_run=False)
    result = asyncio.run(pruner.gc(dry_run=False))
    assert sample(metrics, 'imageregistry_prune_runs_total{result="success"}') == 1
    assert sample(metrics, "imageregistry_prune_images_deleted_total") == 3
    assert sample(metrics, 'imageregistry_gc_runs_total{result="success"}') == 1
    assert sample(metrics, "imageregistry_gc_blobs_deleted_total") == len(result.blobs) > 0
    assert sample(metrics, "imageregistry_gc_bytes_reclaimed_total") == result.size
    db.dispose()
