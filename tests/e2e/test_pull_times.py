"""Pull times still reach `ac adm top images` now that pulls write nothing themselves
: each worker writes what it noted every `pull_times_flush_seconds`,
and what it still holds when it is stopped."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.ac_support import ac, login_admin
from tests.e2e.oci_support import OCI_MANIFEST, image_manifest, sha
from tests.support.server import RegistryProcess

REPO = "team-a/app"


def push(client: httpx.Client) -> str:
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = b"one layer"
    for data in (config, layer):
        started = client.post(f"/v2/{REPO}/blobs/uploads/")
        started.raise_for_status()
        done = client.put(started.headers["location"], params={"digest": sha(data)}, content=data)
        done.raise_for_status()
    manifest = image_manifest(config, [layer])
    client.put(
        f"/v2/{REPO}/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    ).raise_for_status()
    return sha(manifest)


def top_item(home: Path, digest: str) -> dict[str, Any]:
    items = json.loads(ac(home, "adm", "top", "images", "-o", "json").stdout)["items"]
    found: dict[str, Any] = next(i for i in items if i["name"] == digest)
    return found


def pulled_at(item: dict[str, Any]) -> datetime | None:
    stamp = item["lastPulled"]
    return None if stamp is None else datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_a_pull_shows_in_ac_adm_top_after_the_next_flush(tmp_path: Path) -> None:
    with RegistryProcess(tmp_path / "data") as server:
        home = login_admin(server, tmp_path / "home")
        with server.client(server.admin_token) as client:
            digest = push(client)
            assert pulled_at(top_item(home, digest)) is None
            before = datetime.now(UTC) - timedelta(seconds=1)
            pulled = client.get(f"/v2/{REPO}/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert pulled.status_code == 200
        deadline = time.monotonic() + 60
        while (when := pulled_at(top_item(home, digest))) is None:
            assert time.monotonic() < deadline, "the pull time was never written"
            time.sleep(0.5)
        assert before <= when <= datetime.now(UTC)
        table = ac(home, "adm", "top", "images").stdout
        assert "pulled" in next(line for line in table.splitlines() if digest in line)


def test_a_stopped_server_writes_the_pull_times_it_still_holds(tmp_path: Path) -> None:
    hourly = {"IMAGE_REGISTRY_PULL_TIMES_FLUSH_SECONDS": "3600"}  # only the stop writes
    server = RegistryProcess(tmp_path / "data", env=hourly).start()
    try:
        with server.client(server.admin_token) as client:
            digest = push(client)
            before = datetime.now(UTC) - timedelta(seconds=1)
            by_digest = client.get(f"/v2/{REPO}/manifests/{digest}")
            assert by_digest.status_code == 200
    finally:
        server.stop()  # SIGTERM: a graceful stop
    assert server.proc is not None and server.proc.returncode == 0
    with RegistryProcess(tmp_path / "data") as again:
        home = login_admin(again, tmp_path / "home")
        when = pulled_at(top_item(home, digest))
        assert when is not None and before <= when <= datetime.now(UTC)
