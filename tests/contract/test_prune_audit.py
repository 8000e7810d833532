"""A scheduled prune has no request: the audit log gets it as the `create imageprunes`
it amounts to, by the pruner's identity, with the run as the response (real schema,
SQLite)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import open_engine
from imageregistry.observability.audit import Auditor
from imageregistry.observability.auditpolicy import parse_policy
from imageregistry.prune.scheduler import ImagePrunerScheduler, auditing
from tests.contract.test_prune_gc import NOW, Seed, _store_pruner, seed_stream
from tests.contract.test_prune_metrics import set_spec
from tests.support.audit import Lines


def test_scheduled_runs_are_audited(tmp_path: Path) -> None:
    db = Database(open_engine(f"sqlite:///{tmp_path / 'registry.db'}"))
    seed = Seed(db)
    seed_stream(seed)
    good = {"schedule": "* * * * *", "keepTagRevisions": 5, "keepYoungerThanDuration": "72h"}
    _store_pruner(db, good)
    lines = Lines()
    policy = parse_policy(
        {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "rules": [
                {
                    "level": "RequestResponse",
                    "resources": [{"group": "image.alauda.io", "resources": ["imageprunes"]}],
                }
            ],
        }
    )
    scheduler = ImagePrunerScheduler(
        db, seed.pruner(), seed.clock, "replica-a", on_run=auditing(Auditor(policy, lines))
    )
    seed.clock_now = NOW.replace(minute=0)
    status = asyncio.run(scheduler.tick())
    assert status is not None
    set_spec(db, {**good, "keepYoungerThanDuration": "soon"})
    seed.clock_now = NOW.replace(minute=1)
    assert asyncio.run(scheduler.tick()) is not None
    seed.clock_now = NOW.replace(minute=1, second=30)  # not due again this minute
    assert asyncio.run(scheduler.tick()) is None
    db.dispose()

    ran, failed = (json.loads(line) for line in lines.lines)
    assert ran["stage"] == "ResponseComplete" and ran["level"] == "RequestResponse"
    assert ran["user"] == {"username": "system:image-pruner", "groups": ["system:authenticated"]}
    assert ran["verb"] == "create"
    assert ran["requestURI"] == "/apis/image.alauda.io/v1/imageprunes"
    assert ran["objectRef"] == {
        "resource": "imageprunes",
        "name": status["lastRun"]["runID"],
        "apiGroup": "image.alauda.io",
        "apiVersion": "v1",
    }
    assert ran["responseStatus"] == {"metadata": {}, "code": 201}
    assert ran["responseObject"]["summary"] == status["lastRun"]["summary"]
    assert failed["responseStatus"]["code"] == 500
    assert failed["responseObject"]["succeeded"] is False
    assert ran["auditID"] != failed["auditID"]
