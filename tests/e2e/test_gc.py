"""`--prune-registry`, `-o json`, exit status on refusal, the storage reconciler, and a
lowered `gc_grace_seconds` applying to blobs already stored, end to end."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.ac_support import ac, login_admin
from tests.e2e.test_prune import Pushed, backdate, home, push_revisions, server, stored_bytes
from tests.support.server import RegistryProcess

__all__ = ["home", "server"]  # module-scoped fixtures shared with test_prune
pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo")


def test_prune_registry_runs_gc_after_a_confirmed_prune(
    server: RegistryProcess, home: Path, tmp_path: Path
) -> None:
    pushed = Pushed()
    digests = push_revisions(server, tmp_path, "team-c/app", 3, pushed)
    backdate(server)
    plan = json.loads(
        ac(home, "adm", "prune", "images", "--keep-tag-revisions=1", "-o", "json").stdout
    )
    assert plan["status"]["dryRun"] is True
    assert set(plan["status"]["images"]) >= set(digests[:2])

    before = stored_bytes(server)
    done = ac(
        home, "adm", "prune", "images", "--keep-tag-revisions=1", "--confirm", "--prune-registry"
    )
    assert f"Deleting image {digests[0]}" in done.stdout
    assert "Deleted " in done.stdout and "Freed up " in done.stdout
    assert stored_bytes(server) < before
    # Every blob the two pruned images used alone (unique layer + config) is gone.
    for digest in digests[:2]:
        for blob in pushed.blobs[digest][1:]:
            path = (
                server.data_dir / "blobs" / "blobs" / "sha256" / blob.digest[7:9] / blob.digest[7:]
            )
            assert not path.exists()


def test_undo_of_unknown_run_fails_with_a_clear_message(home: Path) -> None:
    result = ac(home, "adm", "prune", "images", "--undo", "prune-nope", "--confirm", check=False)
    assert result.returncode != 0 and "prune-nope" in result.stderr and "not found" in result.stderr


def test_reconcile_reports_bytes_the_database_does_not_know(
    server: RegistryProcess, home: Path
) -> None:
    data = b"bytes written behind the registry's back"
    hexd = hashlib.sha256(data).hexdigest()
    path = server.data_dir / "blobs" / "blobs" / "sha256" / hexd[:2] / hexd
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    old = time.time() - 3 * 86400
    os.utime(path, (old, old))
    report = ac(home, "adm", "registry", "gc", "--reconcile")
    assert f"Unknown to the database: blob sha256:{hexd}" in report.stdout
    assert path.exists()  # dry run by default
    ac(home, "adm", "registry", "gc", "--reconcile", "--confirm")
    assert not path.exists()


def test_lowering_gc_grace_applies_to_blobs_already_stored(tmp_path: Path) -> None:
    """A blob uploaded under the default one-hour grace is kept; after a restart with
    `gc_grace_seconds` lowered (to 0) the next GC reclaims it, without touching it again."""
    data = b"uploaded, never referenced by a manifest\n"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    process = RegistryProcess(data_dir=tmp_path / "data")
    with process, process.client(process.admin_token) as client:
        r = client.post("/v2/team/app/blobs/uploads/", params={"digest": digest}, content=data)
        assert r.status_code == 201, r.text
        home = login_admin(process, tmp_path / "home")
        kept = json.loads(ac(home, "adm", "registry", "gc", "--confirm", "-o", "json").stdout)
        assert kept["status"]["count"] == 0 and kept["status"]["held"]["count"] == 1
    lowered = RegistryProcess(
        data_dir=tmp_path / "data",
        port=process.port,  # the address `ac login` saved
        env={"IMAGE_REGISTRY_GC_GRACE_SECONDS": "0"},
    )
    with lowered, lowered.client(lowered.admin_token) as client:
        done = json.loads(ac(home, "adm", "registry", "gc", "--confirm", "-o", "json").stdout)
        assert [b["digest"] for b in done["status"]["blobs"]] == [digest]
        assert client.head(f"/v2/team/app/blobs/{digest}").status_code == 404
