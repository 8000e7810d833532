"""Event notifications with a real receiver on loopback, compared with Debian's
distribution 2.8 (`docker-registry`) doing the same `skopeo copy`, and delivered after an
outage of the receiver that spans a crash and restart of the server.

`NOTIFY_OUTAGE_SECONDS` sets how long the receiver stays down (60 s by default, the
scenario the feature was specified with; lower it for a quick local run).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.oci_support import Layout, build_layout, skopeo
from tests.support.postgres import create_database, free_port
from tests.support.receiver import Receiver
from tests.support.server import RegistryProcess

DISTRIBUTION = Path("/usr/bin/docker-registry")
EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,9}Z$")
ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
OUTAGE_SECONDS = float(os.environ.get("NOTIFY_OUTAGE_SECONDS", "60"))

pytestmark = pytest.mark.skipif(not DISTRIBUTION.exists(), reason="docker-registry missing")


def endpoint(receiver: Receiver, path: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "listener",
        "url": receiver.url(path),
        "headers": {"Authorization": ["Bearer receiver-secret"]},
        "timeout": "2s",
        "threshold": 1,
        "backoff": "200ms",
        **extra,
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.stop()


def start_distribution(root: Path, receiver: Receiver) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "storage")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "notify-test"},
        "notifications": {"endpoints": [endpoint(receiver, "/distribution")]},
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yml").write_text(yaml.safe_dump(config))
    log = (root / "distribution.log").open("wb")
    proc = subprocess.Popen(
        [str(DISTRIBUTION), "serve", str(root / "config.yml")], stdout=log, stderr=log
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200:
                return proc, f"127.0.0.1:{port}"
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"distribution did not start: see {root / 'distribution.log'}")
        time.sleep(0.2)


def our_server(root: Path, notifications: dict[str, Any]) -> RegistryProcess:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"notifications": notifications}))
    return RegistryProcess(data_dir=root / "data", env={"IMAGE_REGISTRY_CONFIG": str(config)})


def shape(event: dict[str, Any]) -> tuple[str, str, str]:
    target = event["target"]
    return event["action"], target.get("digest", ""), target.get("tag", "")


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    """The event without what differs by nature: ids, times, hosts, ports, the actor."""
    target = dict(event["target"])
    url = target.pop("url", None)
    request = dict(event["request"])
    for key in ("id", "addr", "host"):
        request.pop(key)
    return {
        "action": event["action"],
        "target": target,
        "url_path": re.sub(r"^https?://[^/]+", "", url) if url else None,
        "request": request,
        "keys": sorted(event),
        "source_keys": sorted(event["source"]),
    }


def comparable_key(event: dict[str, Any]) -> str:
    return json.dumps(comparable(event), sort_keys=True)


def test_the_same_skopeo_copy_sends_the_same_events_as_distribution(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.start()
    layout: Layout = build_layout(tmp_path / "layout", "notify")
    proc, dist = start_distribution(tmp_path / "distribution", receiver)
    ours = our_server(tmp_path / "ours", {"endpoints": [endpoint(receiver, "/ours")]})
    try:
        with ours:
            certs = str(ours.cert_dir(tmp_path / "certs"))
            token = ours.admin_token
            pushed = [
                skopeo(
                    "copy",
                    "--dest-tls-verify=false",
                    f"oci:{layout.path}:v1",
                    f"docker://{dist}/team/app:v1",
                ),
                skopeo(
                    "copy",
                    "--dest-cert-dir",
                    certs,
                    "--dest-creds",
                    f"x:{token}",
                    f"oci:{layout.path}:v1",
                    f"docker://{ours.host}/team/app:v1",
                ),
                skopeo(
                    "copy",
                    "--src-tls-verify=false",
                    f"docker://{dist}/team/app:v1",
                    f"oci:{tmp_path / 'out-dist'}:x",
                ),
                skopeo(
                    "copy",
                    "--src-cert-dir",
                    certs,
                    "--src-registry-token",
                    token,
                    f"docker://{ours.host}/team/app:v1",
                    f"oci:{tmp_path / 'out-ours'}:x",
                ),
            ]
            for result in pushed:
                assert result.returncode == 0, result.stderr
            digest = layout.manifest_digest
            blob = min(d for d in layout.blobs if d != digest)
            # HEADs count as pulls in distribution (a 304 does not); then the deletes.
            with (
                httpx.Client(base_url=f"http://{dist}") as theirs_client,
                ours.client(token) as client,
            ):
                for each in (theirs_client, client):
                    etag = each.get("/v2/team/app/manifests/v1", headers=ACCEPT).headers["etag"]
                    cached = each.get(
                        "/v2/team/app/manifests/v1", headers={**ACCEPT, "If-None-Match": etag}
                    )
                    assert cached.status_code == 304
                    assert each.head("/v2/team/app/manifests/v1", headers=ACCEPT).is_success
                    assert each.head(f"/v2/team/app/blobs/{blob}").is_success
                    deleted = each.delete(f"/v2/team/app/manifests/{digest}")
                    assert deleted.status_code == 202, deleted.text
            blobs = len(layout.blobs) - 1  # the layout's blobs less its manifest

            def complete(events: list[dict[str, Any]]) -> bool:
                # blob push and pull, manifest push and 2 pulls, 2 HEADs, 2 deletes
                return len(events) >= 2 * blobs + 7

            theirs = receiver.wait_for("/distribution", complete)
            mine = receiver.wait_for("/ours", complete)
            time.sleep(1)  # nothing more is on its way: a late extra event would fail below
            theirs, mine = receiver.events("/distribution"), receiver.events("/ours")
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    assert sorted(map(shape, mine)) == sorted(map(shape, theirs))
    assert sorted(map(comparable_key, mine)) == sorted(map(comparable_key, theirs))
    for event in mine:
        assert UUID.match(event["id"]) and TIMESTAMP.match(event["timestamp"])
        assert event["request"]["addr"].startswith("127.0.0.1:")
        assert event["request"]["host"] == ours.host
        if "url" in event["target"]:
            assert event["target"]["url"].startswith(f"https://{ours.host}/v2/team/app/")
        assert event["actor"] == {"name": "system:admin"}  # distribution's caller: anonymous
    assert all(e["actor"] == {} for e in theirs)
    # Same order of one repository's events: blobs before the manifest that needs them,
    # pushes before pulls, the manifest's deletion before its tag's.
    for events in (mine, theirs):
        actions = [shape(e) for e in events]
        manifest_push = actions.index(("push", digest, "v1"))
        assert all(a[0] == "push" for a in actions[:manifest_push])
        assert actions[-2:] == [("delete", digest, ""), ("delete", "", "v1")]
    for delivery in receiver.deliveries:
        assert delivery.headers["Content-Type"] == EVENTS_TYPE
        assert delivery.headers["Authorization"] == "Bearer receiver-secret"
        assert len(delivery.events) == 1  # one event per request, as distribution sends


def metric(client: httpx.Client, name: str) -> float:
    text = client.get("/metrics").text
    match = re.search(rf'^{name}\{{endpoint="listener"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_every_event_arrives_after_an_outage_spanning_a_server_crash(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The receiver is down for `OUTAGE_SECONDS`; the server is killed (SIGKILL) and started
    again meanwhile, with events still queued. Afterwards every event arrives, in order per
    repository; a duplicate is only ever the same event (same id, same body)."""
    down_since = time.monotonic()
    layout = build_layout(tmp_path / "layout", "outage")
    ours = our_server(
        tmp_path / "ours",
        {
            "endpoints": [
                endpoint(
                    receiver,
                    "/ours",
                    timeout="1s",
                    maxbackoff="2s",
                    ignore={"actions": ["pull"]},  # skopeo's HEADs of a second push
                )
            ]
        },
    )
    with ours:
        certs = str(ours.cert_dir(tmp_path / "certs"))
        token = ours.admin_token

        def push(tag: str) -> None:
            result = skopeo(
                "copy",
                "--dest-cert-dir",
                certs,
                "--dest-creds",
                f"x:{token}",
                f"oci:{layout.path}:v1",
                f"docker://{ours.host}/team/app:{tag}",
            )
            assert result.returncode == 0, result.stderr

        push("v1")
        with ours.client(token) as client:
            deadline = time.monotonic() + 120
            while metric(client, "imageregistry_notifications_failed_total") < 1:
                assert time.monotonic() < deadline, "no failed delivery in the metrics"
                time.sleep(0.5)
        ours.kill()  # a crash: nothing is flushed or released
        ours.start()
        push("v2")
        with ours.client(token) as client:
            assert client.delete("/v2/team/app/manifests/v1").status_code == 202
            deadline = time.monotonic() + 120
            while metric(client, "imageregistry_notifications_pending") < 1:
                assert time.monotonic() < deadline, "the pending gauge never showed the queue"
                time.sleep(0.5)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_since)))
        receiver.start()
        blobs = sorted(d for d in layout.blobs if d != layout.manifest_digest)
        digest = layout.manifest_digest
        expected = sorted(
            [("push", b, "") for b in blobs]
            + [("push", digest, "v1"), ("push", digest, "v2"), ("delete", "", "v1")]
        )
        events = receiver.wait_for(
            "/ours", lambda got: sorted({shape(e) for e in got}) == expected, timeout=180
        )
        with ours.client(token) as client:
            deadline = time.monotonic() + 60
            while metric(client, "imageregistry_notifications_pending") > 0:
                assert time.monotonic() < deadline, "the outbox never emptied"
                time.sleep(0.5)
    first: dict[str, dict[str, Any]] = {}
    for event in receiver.events("/ours"):
        assert first.setdefault(event["id"], event) == event  # duplicates: the same event
    assert len({e["id"] for e in events}) == len(expected)
    order = [shape(e) for e in first.values()]
    assert order.index(("push", digest, "v1")) > max(order.index(("push", b, "")) for b in blobs)
    assert order.index(("push", digest, "v1")) < order.index(("push", digest, "v2"))
    assert order.index(("push", digest, "v2")) < order.index(("delete", "", "v1"))


def test_two_replicas_of_two_workers_on_postgresql_deliver_every_event_in_order(
    tmp_path: Path, receiver: Receiver, postgres_server: str
) -> None:
    """Two replicas (two workers each) share one PostgreSQL database and both send; a
    repository's pushes and deletes, made through either replica, reach the endpoint
    each at least once (duplicates: the same event) and in the order they committed."""
    receiver.start()
    database = create_database(postgres_server, "notify_replicas")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "notifications": {
                    "endpoints": [endpoint(receiver, "/ha", ignore={"actions": ["pull"]})]
                }
            }
        )
    )
    replicas = [
        RegistryProcess(
            data_dir=tmp_path / name,
            database=database,
            extra_args=["--storage", str(tmp_path / "blobs"), "--workers", "2"],
            env={"IMAGE_REGISTRY_CONFIG": str(config)},
        )
        for name in ("a", "b")
    ]
    layout = build_layout(tmp_path / "layout", "replicas")
    digest = layout.manifest_digest
    try:
        for replica in replicas:
            replica.start(timeout=120)
        a, b = replicas

        def push(server: RegistryProcess, target: str) -> None:
            result = skopeo(
                "copy",
                "--dest-cert-dir",
                str(server.cert_dir(tmp_path / "certs")),
                "--dest-creds",
                f"x:{server.admin_token}",
                f"oci:{layout.path}:v1",
                f"docker://{server.host}/{target}",
            )
            assert result.returncode == 0, result.stderr

        push(a, "team/app:v1")
        push(b, "team/other:v1")
        with b.client(b.admin_token) as client:
            assert client.delete("/v2/team/app/manifests/v1").status_code == 202
        push(a, "team/app:v2")
        with a.client(a.admin_token) as client:
            assert client.delete("/v2/team/other/manifests/v1").status_code == 202
        blobs = [("push", d, "") for d in layout.blobs if d != digest]
        expected = {
            "team/app": [
                *blobs,
                ("push", digest, "v1"),
                ("delete", "", "v1"),
                ("push", digest, "v2"),
            ],
            "team/other": [*blobs, ("push", digest, "v1"), ("delete", "", "v1")],
        }

        def arrived(events: list[dict[str, Any]]) -> bool:
            return len({e["id"] for e in events}) >= sum(map(len, expected.values()))

        receiver.wait_for("/ha", arrived, timeout=180)
        time.sleep(2)  # a late extra event would fail below
    finally:
        for replica in replicas:
            replica.stop()
    first: dict[str, dict[str, Any]] = {}
    for event in receiver.events("/ha"):
        assert first.setdefault(event["id"], event) == event
    for repository, wanted in expected.items():
        got = [shape(e) for e in first.values() if e["target"]["repository"] == repository]
        assert sorted(got) == sorted(wanted), repository
        blob_count = len(blobs)
        assert sorted(got[:blob_count]) == sorted(blobs)  # blobs first, in any order
        assert got[blob_count:] == wanted[blob_count:], repository
