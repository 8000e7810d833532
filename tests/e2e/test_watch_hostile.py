"""Watches from one tenant must not starve the server.

The attack as reported: one tenant opens hundreds of watches from an old resourceVersion,
each replaying the change log, while other users pull. Here a real server subprocess is
attacked over HTTPS by 300 such watches from one user; the unrelated `tags/list` endpoint
must go on answering `200`, the watches beyond the per-user cap get `429` with
`Retry-After`, and the server's memory stays bounded. A second server keeps only two
seconds of history: an old resourceVersion then answers the `ERROR` event with a `410
Expired` Status that kube-apiserver sends, and the real kubectl still watches.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.kubectl_support import Kubectl, add_user_token, read_until
from tests.e2e.oci_support import image_manifest, sha
from tests.support.server import RegistryProcess

TENANT = "tenant"
STREAMS = f"/apis/image.alauda.io/v1/namespaces/{TENANT}/imagestreams"
PER_USER = 20
ATTACKERS = 300
MERGE = "application/merge-patch+json"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def server_rss_mib(server: RegistryProcess) -> float:
    assert server.proc is not None
    pids = [server.proc.pid, *server.worker_pids()]
    return sum(_rss_kib(pid) for pid in pids) / 1024


def push(client: httpx.Client, repo: str) -> None:
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = b"watch hostile layer" * 64
    for blob in (config, layer):
        location = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
        client.put(location, params={"digest": sha(blob)}, content=blob).raise_for_status()
    put = client.put(
        f"/v2/{repo}/manifests/v1",
        content=image_manifest(config, [layer]),
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert put.status_code == 201, put.text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    env = {
        "IMAGE_REGISTRY_WATCH_MAX_PER_USER": str(PER_USER),
        "IMAGE_REGISTRY_WATCH_MAX_TOTAL": "100",
    }
    data = tmp_path_factory.mktemp("watch-hostile") / "data"
    with RegistryProcess(data_dir=data, env=env) as process:
        yield process


@pytest.fixture(scope="module")
def admin(server: RegistryProcess) -> Iterator[httpx.Client]:
    with server.client(server.admin_token, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def history(admin: httpx.Client) -> int:
    """A namespace with 150 streams changed four times each (600 changes to replay), one
    image to list tags of, and a tenant allowed to watch; the number of streams."""
    assert admin.post("/api/v1/namespaces", json={"metadata": {"name": TENANT}}).is_success
    binding = {
        "metadata": {"name": "mallory-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory"}],
    }
    url = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{TENANT}/rolebindings"
    assert admin.post(url, json=binding).is_success
    count = 150
    for i in range(count):
        assert admin.post(STREAMS, json={"metadata": {"name": f"s{i}"}}).is_success
    for round_ in range(3):
        for i in range(count):
            patch = {"metadata": {"labels": {"round": str(round_)}}}
            r = admin.patch(
                f"{STREAMS}/s{i}", content=json.dumps(patch), headers={"Content-Type": MERGE}
            )
            assert r.is_success, r.text
    push(admin, "pulls/app")
    return count


@dataclass
class Attack:
    """`ATTACKERS` watches from resourceVersion 1, opened at once, read in one event loop
    on a thread of their own until `stop`."""

    server: RegistryProcess
    token: str
    statuses: list[int] = field(default_factory=list)
    refused: list[httpx.Response] = field(default_factory=list)
    events: dict[int, int] = field(default_factory=dict)  # admitted watch -> events read
    ended: set[int] = field(default_factory=set)  # admitted watches the server closed
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None

    async def _watch(self, client: httpx.AsyncClient, n: int) -> None:
        params = {"watch": "true", "resourceVersion": "1", "timeoutSeconds": "600"}
        async with client.stream("GET", STREAMS, params=params) as response:
            self.statuses.append(response.status_code)
            if response.status_code != 200:
                await response.aread()
                self.refused.append(response)
                return
            self.events[n] = 0
            async for _line in response.aiter_lines():
                self.events[n] += 1
            self.ended.add(n)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        verify = ssl.create_default_context(cafile=self.server.ca_file)
        limits = httpx.Limits(max_connections=ATTACKERS + 10)
        async with httpx.AsyncClient(
            base_url=self.server.url,
            headers={"Authorization": f"Bearer {self.token}"},
            verify=verify,
            limits=limits,
            timeout=httpx.Timeout(120, read=None),
        ) as client:
            tasks = [asyncio.create_task(self._watch(client, n)) for n in range(ATTACKERS)]
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def start(self) -> Attack:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),))
        self._thread.start()
        return self

    def wait_all_answered(self, limit: float = 180.0) -> None:
        end = time.monotonic() + limit
        while len(self.statuses) < ATTACKERS and time.monotonic() < end:
            time.sleep(0.2)
        assert len(self.statuses) == ATTACKERS, f"only {len(self.statuses)} watches answered"

    def stop(self) -> None:
        assert self._loop is not None and self._thread is not None
        while self._stop is None:
            time.sleep(0.05)
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=120)
        self._loop.close()


def test_replaying_watches_of_one_tenant_do_not_starve_other_requests(
    server: RegistryProcess, admin: httpx.Client, history: int
) -> None:
    mallory = add_user_token(server, "mallory")
    attack = Attack(server, mallory).start()
    try:
        attack.wait_all_answered()
        # The unrelated endpoint answers throughout: 500 requests, each 200, all within two
        # minutes while every admitted watch is still open (a generous overall bound: before
        # the fix only ~190 were answered in those two minutes).
        end = time.monotonic() + 120
        answered = 0
        while answered < 500 and time.monotonic() < end:
            response = admin.get("/v2/pulls/app/tags/list")
            assert response.status_code == 200, response.text
            answered += 1
        assert answered == 500
        rss = server_rss_mib(server)
        # another user may still watch: the cap is per user
        other = admin.get(STREAMS, params={"watch": "true", "timeoutSeconds": "1"})
        assert other.status_code == 200
        assert not attack.ended, "the attack's watches were closed early"
    finally:
        attack.stop()
    assert attack.statuses.count(200) == PER_USER
    assert attack.statuses.count(429) == ATTACKERS - PER_USER
    for response in attack.refused:
        assert int(response.headers["retry-after"]) > 0
        body = response.json()
        assert body["kind"] == "Status" and body["code"] == 429
        assert body["reason"] == "TooManyRequests"
        assert "mallory" in body["message"] and str(PER_USER) in body["message"]
    # every admitted watch replayed the history (one event per stream at least)
    assert all(count >= history for count in attack.events.values()), attack.events
    assert rss < 1024, f"server RSS {rss:.0f} MiB during the attack"


def admitted_within(client: httpx.Client, limit: float = 60.0) -> httpx.Response:
    """Ask for a one-second watch until it is admitted (or `limit` seconds pass)."""
    end = time.monotonic() + limit
    while True:
        response = client.get(STREAMS, params={"watch": "true", "timeoutSeconds": "1"})
        if response.status_code != 429 or time.monotonic() > end:
            return response
        time.sleep(0.5)


def test_closed_watches_free_their_places(server: RegistryProcess, history: int) -> None:
    """The same user may watch again once their watches are closed: the server notices
    closed connections rather than holding a place until the watch's timeout."""
    token = add_user_token(server, "mallory")
    with server.client(token, timeout=60) as client:
        assert admitted_within(client).status_code == 200  # the attack above has gone
        opened = []
        for _ in range(PER_USER):
            params = {"watch": "true", "timeoutSeconds": "600"}
            context = client.stream("GET", STREAMS, params=params)
            opened.append(context)
            assert context.__enter__().status_code == 200
        refused = client.get(STREAMS, params={"watch": "true", "timeoutSeconds": "1"})
        assert refused.status_code == 429
        for context in opened:
            context.__exit__(None, None, None)
    with server.client(token, timeout=60) as client:
        assert admitted_within(client).status_code == 200


# --- a short history: 410 Expired, bookmarks, kubectl -------------------------------------


@pytest.fixture(scope="module")
def compacting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    data = tmp_path_factory.mktemp("watch-compacting") / "data"
    with RegistryProcess(data_dir=data, env={"IMAGE_REGISTRY_WATCH_HISTORY_SECONDS": "2"}) as p:
        yield p


def watch_lines(client: httpx.Client, url: str, **params: str) -> list[dict[str, Any]]:
    response = client.get(url, params={"watch": "true", "timeoutSeconds": "1", **params})
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def test_a_version_before_the_kept_history_is_expired(compacting: RegistryProcess) -> None:
    accounts = "/api/v1/namespaces/default/serviceaccounts"
    with compacting.client(compacting.admin_token, timeout=60) as admin:
        created = admin.post(accounts, json={"metadata": {"name": "first"}})
        assert created.status_code == 201, created.text
        old = created.json()["metadata"]["resourceVersion"]
        # within the window the watch replays; once compacted it is expired
        end = time.monotonic() + 120
        while time.monotonic() < end:
            assert admin.post(accounts, json={"metadata": {"generateName": "n-"}}).is_success
            events = watch_lines(admin, accounts, resourceVersion=old)
            if events and events[0]["type"] == "ERROR":
                break
            time.sleep(0.5)
        assert [e["type"] for e in events] == ["ERROR"]
        status = events[0]["object"]
        assert status["kind"] == "Status" and status["apiVersion"] == "v1"
        assert status["code"] == 410 and status["reason"] == "Expired"
        assert status["message"].startswith(f"too old resource version: {old} (")

        # a watch from the current version works; the bookmark before the timeout carries
        # the newest version, from which the next watch resumes within the window
        current = admin.get(accounts).json()["metadata"]["resourceVersion"]
        events = watch_lines(admin, accounts, resourceVersion=current, allowWatchBookmarks="true")
        assert [e["type"] for e in events] == ["BOOKMARK"]
        assert int(events[0]["object"]["metadata"]["resourceVersion"]) >= int(current)


def test_kubectl_watch_sees_changes_and_expired_versions(
    compacting: RegistryProcess, tmp_path: Path
) -> None:
    k = Kubectl(compacting, tmp_path / "kube-cache")
    k.ok("create", "ns", "kw")
    proc = k.popen("get", "serviceaccounts", "-n", "kw", "--watch")
    try:
        k.ok("create", "serviceaccount", "watched-one", "-n", "kw")
        seen = read_until(proc, "watched-one")
    finally:
        proc.kill()
        proc.wait()
    assert "watched-one" in seen
    # kubectl passes the watch's ERROR event through as it came (once version 1 is compacted)
    url = "/api/v1/namespaces/kw/serviceaccounts?watch=true&resourceVersion=1&timeoutSeconds=1"
    end = time.monotonic() + 120
    while True:
        event = json.loads(k.ok("get", "--raw", url).splitlines()[0])
        if event["type"] == "ERROR" or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert event["type"] == "ERROR" and event["object"]["reason"] == "Expired"
