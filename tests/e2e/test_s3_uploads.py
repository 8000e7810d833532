"""Uploads on S3 storage through real servers: a chunked upload alternating between two
server processes over one PostgreSQL database and one bucket (OpenStack Swift's s3api on
loopback), and a large streamed upload whose bytes never pile up in the server's memory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import create_database
from tests.support.s3servers import S3Server, create_bucket, swift_server
from tests.support.server import RegistryProcess

BUCKET = "registry-uploads"
MiB = 1 << 20


@pytest.fixture(scope="module")
def swift() -> Iterator[S3Server]:
    with swift_server() as server:
        create_bucket(server, BUCKET)
        yield server


@pytest.fixture(scope="module")
def replicas(
    swift: S3Server, postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RegistryProcess, RegistryProcess]]:
    database = create_database(postgres_server, "s3uploads")
    env = {**swift.env(), "IMAGE_REGISTRY_STORAGE_S3": json.dumps({"part_size": 5 * MiB})}
    root = tmp_path_factory.mktemp("replicas")
    first, second = (
        RegistryProcess(
            data_dir=root / name,
            plain_http=True,
            database=database,
            extra_args=["--storage", f"s3://{BUCKET}/shared"],
            env=env,
        )
        for name in ("a", "b")
    )
    with first.start(timeout=90), second.start(timeout=90):
        yield first, second


def _rss_mib(server: RegistryProcess) -> float:
    total = 0
    for pid in server.worker_pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def test_a_chunked_upload_alternates_between_two_servers(
    replicas: tuple[RegistryProcess, RegistryProcess],
) -> None:
    a, b = replicas
    token = a.admin_token
    data = os.urandom(6 * MiB) + os.urandom(3 * MiB) + os.urandom(2 * MiB + 17)
    cuts = [0, 6 * MiB, 9 * MiB, len(data)]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with a.client(token, timeout=120) as on_a, b.client(token, timeout=120) as on_b:
        started = on_a.post("/v2/team/app/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        for index, (begin, end) in enumerate(itertools.pairwise(cuts)):
            client = (on_a, on_b)[index % 2]
            answer = client.patch(
                location,
                content=data[begin:end],
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{begin}-{end - 1}",
                },
            )
            assert answer.status_code == 202, answer.text
            assert answer.headers["range"] == f"0-{end - 1}"
            location = answer.headers["location"]
        done = on_b.put(location, params={"digest": digest})
        assert done.status_code == 201, done.text
        for client in (on_a, on_b):
            pulled = client.get(f"/v2/team/app/blobs/{digest}", follow_redirects=True)
            assert pulled.status_code == 200
            assert pulled.content == data


def test_a_wrong_digest_publishes_nothing(
    replicas: tuple[RegistryProcess, RegistryProcess],
) -> None:
    a, b = replicas
    data = os.urandom(7 * MiB)
    claimed = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    with a.client(a.admin_token, timeout=120) as on_a, b.client(a.admin_token) as on_b:
        location = on_a.post("/v2/team/app/blobs/uploads/").headers["location"]
        answer = on_a.patch(
            location, content=data, headers={"Content-Type": "application/octet-stream"}
        )
        assert answer.status_code == 202
        refused = on_b.put(answer.headers["location"], params={"digest": claimed})
        assert refused.status_code == 400
        assert refused.json()["errors"][0]["code"] == "DIGEST_INVALID"
        for digest in (claimed, actual):
            assert on_a.head(f"/v2/team/app/blobs/{digest}").status_code == 404


def test_a_large_streamed_upload_keeps_server_memory_bounded(
    replicas: tuple[RegistryProcess, RegistryProcess],
) -> None:
    a, _ = replicas
    size = 256 * MiB
    block = os.urandom(MiB)
    hasher = hashlib.sha256()
    for index in range(size // MiB):
        hasher.update(index.to_bytes(8, "big") + block[8:])
    digest = "sha256:" + hasher.hexdigest()

    def body() -> Iterator[bytes]:
        for index in range(size // MiB):
            yield index.to_bytes(8, "big") + block[8:]

    before = _rss_mib(a)
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _rss_mib(a))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with a.client(a.admin_token, timeout=600) as client:
            location = client.post("/v2/team/big/blobs/uploads/").headers["location"]
            answer = client.put(
                location,
                params={"digest": digest},
                content=body(),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert answer.status_code == 201, answer.text
            assert client.head(f"/v2/team/big/blobs/{digest}").headers["content-length"] == str(
                size
            )
    finally:
        stop.set()
        sampler.join()
    print(f"server RSS {before:.0f} MiB before, peak {peak[0]:.0f} MiB")
    # Parts of 5 MiB, one in flight and one filling: far below the 256 MiB pushed.
    assert peak[0] - before < 64, f"server RSS grew {peak[0] - before:.0f} MiB"
