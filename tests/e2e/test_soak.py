"""Safety soak: concurrent pushes and pulls while `ac adm registry gc --confirm` loops.

Eight clients push random images (fresh layers, a per-client shared base layer and an
orphan blob each round, so GC always has garbage) and pull tagged images back, verifying
every byte, while GC with a zero grace period runs back to back. Pass: no push fails
(a client follows the documented recovery — a blob GC is deleting is answered with
BLOB_UNKNOWN / MANIFEST_BLOB_UNKNOWN and the client uploads it again, counted as a
retry), no pull of a tagged image ever sees BLOB_UNKNOWN, and every tagged image verifies
at the end, and no request is ever answered with a 5xx other than a retryable
`503` (a lost deadlock used to be a `500`; such a push is now retried
inside the server). Clients back off before retrying, as real clients do: a blob in a GC
batch stays `deleting` until the batch is swept, so an immediate retry would only meet it
again. Runs on SQLite (one server), on PostgreSQL (two servers sharing the database and
the blob directory), and on PostgreSQL + S3 (two replicas sharing the database and a
bucket of moto, an S3 emulator, or Swift's s3api with SOAK_S3_SERVER=swift; blobs pulled
through presigned redirects), where at the
end `gc --reconcile` (grace 0) must find no object the database does not know and no
unfinished multipart upload. The issue asks for 60 s; the suite defaults to
SOAK_SECONDS=20 per backend to stay inside its time budget (set SOAK_SECONDS=60 for the
full run).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.ac_support import AC
from tests.e2e.oci_support import OCI_MANIFEST, image_manifest, sha
from tests.support.postgres import create_database
from tests.support.replicas import s3_server, two_replicas
from tests.support.server import RegistryProcess

SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
S3_SERVER = os.environ.get("SOAK_S3_SERVER", "moto")  # or "swift" (slower: by hand)
CLIENTS = 8
ATTEMPTS = 8
# On S3 each blob upload is ~10 requests to the store (~8x slower than on a filesystem
# here), so a push spends ~8x as long exposed to a zero-grace GC and needs its documented
# recovery (upload again what GC took) more often; the budget is larger, the rule the same.
S3_ATTEMPTS = 16


def retryable(status: int, text: str) -> bool:
    """The documented recoveries: upload a blob GC took again; retry a 503 later."""
    return "BLOB_UNKNOWN" in text or status == 503 or text.startswith("blob upload 503")


@dataclass
class Tally:
    pushes: int = 0
    pulls: int = 0
    retries: int = 0
    failed_pushes: list[str] = field(default_factory=list)
    blob_unknown_pulls: list[str] = field(default_factory=list)
    gc_runs: int = 0
    gc_deleted: int = 0
    server_errors: list[str] = field(default_factory=list)  # any 5xx but a 503
    unavailable: int = 0  # 503 answers (retryable: the client backs off and retries)
    reasons: Counter[str] = field(default_factory=Counter)  # why pushes were retried
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, response: httpx.Response) -> None:
        """Every answer passes here (an httpx response hook)."""
        if response.status_code < 500:
            return
        with self.lock:
            if response.status_code == 503:
                self.unavailable += 1
            else:
                request = response.request
                self.server_errors.append(
                    f"{request.method} {request.url.path}: {response.status_code}"
                )


class Client:
    def __init__(
        self,
        server: RegistryProcess,
        token: str,
        repo: str,
        tally: Tally,
        attempts: int = ATTEMPTS,
    ) -> None:
        self.attempts = attempts
        self.http = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            event_hooks={"response": [tally.note]},
        )
        self.repo, self.tally = repo, tally
        self.base = os.urandom(4096)
        self.tags: dict[str, tuple[str, list[bytes]]] = {}

    def upload(self, data: bytes) -> None:
        digest = sha(data)
        if self.http.head(f"/v2/{self.repo}/blobs/{digest}").status_code == 200:
            return
        start = self.http.post(f"/v2/{self.repo}/blobs/uploads/")
        if start.status_code == 503:
            raise RuntimeError(f"blob upload 503: {start.text[:200]}")
        assert start.status_code == 202, start.text
        location = start.headers["location"]
        sep = "&" if "?" in location else "?"
        done = self.http.put(f"{location}{sep}digest={digest}", content=data)
        if done.status_code != 201:
            raise RuntimeError(f"blob upload {done.status_code}: {done.text[:200]}")

    def push(self, tag: str) -> None:
        layers = [self.base, os.urandom(random.randint(1000, 8000))]
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "n": uuid.uuid4().hex}
        ).encode()
        manifest = image_manifest(config, layers)
        for attempt in range(self.attempts):
            try:
                for data in [*layers, config]:
                    self.upload(data)
                self.upload(os.urandom(512))  # an orphan: garbage for the next GC
                put = self.http.put(
                    f"/v2/{self.repo}/manifests/{tag}",
                    content=manifest,
                    headers={"Content-Type": OCI_MANIFEST},
                )
                if put.status_code == 201:
                    self.tags[tag] = (sha(manifest), [config, *layers])
                    with self.tally.lock:
                        self.tally.pushes += 1
                    return
                if not retryable(put.status_code, put.text):
                    raise RuntimeError(f"manifest {put.status_code}: {put.text[:200]}")
                reason = f"manifest {put.status_code} {put.text[:60]}"
            except RuntimeError as exc:
                reason = str(exc)[:80]
                if not retryable(0, str(exc)) or attempt == self.attempts - 1:
                    with self.tally.lock:
                        self.tally.failed_pushes.append(f"{self.repo}:{tag}: {exc}")
                    return
            with self.tally.lock:
                self.tally.retries += 1
                self.tally.reasons[reason] += 1
            time.sleep(min(2.0, 0.1 * 2**attempt))  # back off, as clients do
        with self.tally.lock:
            self.tally.failed_pushes.append(f"{self.repo}:{tag}: gave up")

    def verify(self, tag: str) -> None:
        digest, blobs = self.tags[tag]
        got = self.http.get(f"/v2/{self.repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200 and sha(got.content) == digest, got.text[:200]
        for data in blobs:
            response = self.http.get(f"/v2/{self.repo}/blobs/{sha(data)}", follow_redirects=True)
            if response.status_code == 404 or response.content != data:
                with self.tally.lock:
                    self.tally.blob_unknown_pulls.append(
                        f"{self.repo}:{tag} {sha(data)} {response.status_code}"
                    )
        with self.tally.lock:
            self.tally.pulls += 1

    def run(self, deadline: float) -> None:
        n = 0
        while time.monotonic() < deadline:
            if self.tags and random.random() < 0.4:
                self.verify(random.choice(list(self.tags)))
            else:
                self.push(f"t{n % 5}")  # tags move: older images stay as untagged metadata
                n += 1


def gc_loop(home: Path, servers: list[RegistryProcess], deadline: float, tally: Tally) -> None:
    i = 0
    while time.monotonic() < deadline:
        server = servers[i % len(servers)]
        i += 1
        env = {
            **os.environ,
            "HOME": str(home),
            "KUBECONFIG": str(home / f"kubeconfig-{server.port}"),
        }
        out = subprocess.run(
            [AC, "adm", "registry", "gc", "--confirm"], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        deleted = [line for line in out.stdout.splitlines() if line.startswith("Deleted ")]
        with tally.lock:
            tally.gc_runs += 1
            tally.gc_deleted += int(deleted[-1].split()[1]) if deleted else 0


def soak(servers: list[RegistryProcess], home: Path, attempts: int = ATTEMPTS) -> Tally:
    token = servers[0].admin_token
    for server in servers:
        env = {
            **os.environ,
            "HOME": str(home),
            "KUBECONFIG": str(home / f"kubeconfig-{server.port}"),
        }
        subprocess.run(
            [AC, "login", server.url, "--token", token], env=env, check=True, capture_output=True
        )
    tally = Tally()
    clients = [
        Client(servers[i % len(servers)], token, f"soak/c{i}", tally, attempts)
        for i in range(CLIENTS)
    ]
    deadline = time.monotonic() + SECONDS
    threads = [threading.Thread(target=c.run, args=(deadline,)) for c in clients]
    threads.append(threading.Thread(target=gc_loop, args=(home, servers, deadline, tally)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gc_loop(home, servers, time.monotonic() + 0.1, tally)  # one more GC after the load
    for client in clients:
        for tag in client.tags:
            client.verify(tag)
    print(
        f"soak: {tally.pushes} pushes ({tally.retries} retries), {tally.pulls} pulls, "
        f"{tally.gc_runs} GC runs deleted {tally.gc_deleted} blobs, "
        f"{len(tally.server_errors)} 5xx answers other than 503, {tally.unavailable} 503s; "
        f"retried on: {dict(tally.reasons.most_common(3))}"
    )
    return tally


def check(tally: Tally) -> None:
    assert tally.server_errors == []
    assert tally.failed_pushes == []
    assert tally.blob_unknown_pulls == []
    assert tally.pushes > 0 and tally.gc_runs > 0 and tally.gc_deleted > 0


ZERO_GRACE = {"IMAGE_REGISTRY_GC_GRACE_SECONDS": "0"}


def test_soak_sqlite(tmp_path: Path) -> None:
    server = RegistryProcess(data_dir=tmp_path / "data", plain_http=True, env=ZERO_GRACE).start()
    try:
        check(soak([server], tmp_path / "home"))
    finally:
        server.stop()


@pytest.fixture
def two_servers(postgres_server: str, tmp_path: Path) -> Iterator[list[RegistryProcess]]:
    url = create_database(postgres_server, f"soak_{uuid.uuid4().hex[:10]}")
    storage = tmp_path / "shared-blobs"
    servers = []
    try:
        for name in ("a", "b"):
            servers.append(
                RegistryProcess(
                    data_dir=tmp_path / name,
                    plain_http=True,
                    database=url,
                    extra_args=["--storage", str(storage)],
                    env=ZERO_GRACE,
                ).start()
            )
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_soak_postgres_two_replicas(two_servers: list[RegistryProcess], tmp_path: Path) -> None:
    check(soak(two_servers, tmp_path / "home"))


@pytest.fixture
def two_s3_replicas(postgres_server: str, tmp_path: Path) -> Iterator[list[RegistryProcess]]:
    env = {**ZERO_GRACE, "IMAGE_REGISTRY_RECONCILE_GRACE_SECONDS": "0"}
    with (
        s3_server(S3_SERVER) as s3,
        two_replicas(
            tmp_path,
            postgres_server,
            s3,
            name=f"soak_{uuid.uuid4().hex[:10]}",
            env=env,
            plain_http=True,
        ) as pair,
    ):
        yield list(pair.both)


def test_soak_s3_two_replicas(two_s3_replicas: list[RegistryProcess], tmp_path: Path) -> None:
    home = tmp_path / "home"
    check(soak(two_s3_replicas, home, S3_ATTEMPTS))
    env = {
        **os.environ,
        "HOME": str(home),
        "KUBECONFIG": str(home / f"kubeconfig-{two_s3_replicas[1].port}"),
    }
    out = subprocess.run(
        [AC, "adm", "registry", "gc", "--reconcile", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)["status"]["reconcile"]
    print(f"reconcile: {report['scanned']} objects scanned")
    assert report["unknown"] == []
    assert report["multipartUploads"] == []
    assert report["scanned"] > 0
