"""SIGKILL during 20 concurrent pushes: after a restart on the same data dir nothing
partial is served and every push that completed still pulls byte for byte.

Small layers go up in 16 KiB chunks (page-cache staging); each push also streams one
layer of several 2 MiB staging blocks in a single PATCH, so the kill can land in the
middle of `O_DIRECT` block writes as well."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e.oci_support import image_manifest, sha
from tests.support.server import RegistryProcess

WORKERS = 20
CHUNK = 16 * 1024
LARGE = (5 << 20) + 123  # crosses several staging blocks and ends mid-page
REPO = "crash/app"
ROUNDS = 30  # bounds the test if the kill came late


@dataclass(frozen=True)
class Push:
    tag: str
    manifest: bytes
    blobs: tuple[bytes, ...]


def make_push(worker: int, round_: int) -> Push:
    config = json.dumps({"architecture": "amd64", "os": "linux", "w": worker, "r": round_}).encode()
    layers = (os.urandom(96 * 1024), os.urandom(40 * 1024), os.urandom(LARGE))
    manifest = image_manifest(config, layers)
    return Push(f"w{worker}-r{round_}", manifest, (config, *layers))


def upload(client: httpx.Client, data: bytes) -> None:
    r = client.post(f"/v2/{REPO}/blobs/uploads/")
    r.raise_for_status()
    location = r.headers["location"]
    if len(data) > CHUNK * 64:  # one streamed PATCH (no Content-Range)
        r = client.patch(location, content=data)
        r.raise_for_status()
        client.put(r.headers["location"], params={"digest": sha(data)}).raise_for_status()
        return
    for start in range(0, len(data), CHUNK):
        chunk = data[start : start + CHUNK]
        r = client.patch(
            location,
            content=chunk,
            headers={"Content-Range": f"{start}-{start + len(chunk) - 1}"},
        )
        r.raise_for_status()
        location = r.headers["location"]
    client.put(location, params={"digest": sha(data)}).raise_for_status()


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.attempted: list[Push] = []
        self.completed: list[Push] = []

    def run(self, server: RegistryProcess, worker: int) -> None:
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            for round_ in range(ROUNDS):
                push = make_push(worker, round_)
                with self.lock:
                    self.attempted.append(push)
                try:
                    for blob in push.blobs:
                        upload(client, blob)
                    r = client.put(
                        f"/v2/{REPO}/manifests/{push.tag}",
                        content=push.manifest,
                        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                    )
                    r.raise_for_status()
                except httpx.HTTPError:
                    return  # the server died under us
                with self.lock:
                    self.completed.append(push)
                    self.lock.notify_all()


def test_sigkill_during_concurrent_uploads(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = RegistryProcess(data_dir=data_dir, plain_http=True).start()
    recorder = Recorder()
    threads = [
        threading.Thread(target=recorder.run, args=(server, i), daemon=True) for i in range(WORKERS)
    ]
    try:
        for thread in threads:
            thread.start()
        with recorder.lock:
            recorder.lock.wait_for(lambda: len(recorder.completed) >= WORKERS, timeout=120)
        server.kill()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        server.kill()
    assert recorder.completed, "no push completed before the kill"
    assert len(recorder.attempted) > len(recorder.completed)  # some were cut off

    restarted = RegistryProcess(data_dir=data_dir, plain_http=True).start()
    try:
        with restarted.client(restarted.admin_token, timeout=30) as client:
            for push in recorder.completed:
                r = client.get(f"/v2/{REPO}/manifests/{push.tag}")
                assert r.status_code == 200 and r.content == push.manifest
                for blob in push.blobs:
                    assert client.get(f"/v2/{REPO}/blobs/{sha(blob)}").content == blob
            for push in recorder.attempted:
                for blob in push.blobs:
                    r = client.get(f"/v2/{REPO}/blobs/{sha(blob)}")
                    assert r.status_code in (200, 404)
                    if r.status_code == 200:
                        assert r.content == blob  # never a partial blob
                r = client.get(f"/v2/{REPO}/manifests/{push.tag}")
                if r.status_code == 200:
                    assert r.content == push.manifest
                else:
                    assert r.status_code == 404
            # The registry still accepts pushes after the crash.
            fresh = make_push(999, 0)
            for blob in fresh.blobs:
                upload(client, blob)
    finally:
        restarted.stop()
        restarted.kill()


def test_upload_session_survives_a_restart(tmp_path: Path) -> None:
    data = os.urandom(64 * 1024)
    data_dir = tmp_path / "data"
    first = RegistryProcess(data_dir=data_dir, plain_http=True).start()
    try:
        with first.client(first.admin_token) as client:
            location = client.post(f"/v2/{REPO}/blobs/uploads/").headers["location"]
            r = client.patch(location, content=data[:1000], headers={"Content-Range": "0-999"})
            assert r.status_code == 202
    finally:
        first.kill()
    second = RegistryProcess(data_dir=data_dir, plain_http=True).start()
    try:
        with second.client(second.admin_token) as client:
            r = client.get(location)
            assert r.status_code == 204 and r.headers["range"] == "0-999"
            r = client.patch(
                location, content=data[1000:], headers={"Content-Range": f"1000-{len(data) - 1}"}
            )
            assert r.status_code == 202
            assert client.put(location, params={"digest": sha(data)}).status_code == 201
            assert client.get(f"/v2/{REPO}/blobs/{sha(data)}").content == data
    finally:
        second.stop()
        second.kill()


def test_a_killed_worker_is_replaced_and_serves_what_was_stored(tmp_path: Path) -> None:
    data = os.urandom(256 * 1024)
    with RegistryProcess(data_dir=tmp_path / "data", plain_http=True) as server:
        assert server.proc is not None
        with server.client(server.admin_token) as client:
            params = {"digest": sha(data)}
            r = client.post(f"/v2/{REPO}/blobs/uploads/", params=params, content=data)
            assert r.status_code == 201
        (worker,) = server.worker_pids()
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        replacement: list[int] = []
        while time.monotonic() < deadline:
            replacement = [pid for pid in server.worker_pids() if pid != worker]
            if replacement:
                try:
                    with server.client(server.admin_token, timeout=2) as client:
                        r = client.get(f"/v2/{REPO}/blobs/{sha(data)}")
                    if r.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        assert server.proc.poll() is None, "the supervisor exited with its worker"
        assert replacement and r.status_code == 200 and r.content == data
