"""Benchmark `ac adm top images` on a large database.

Populates a fresh SQLite database with 100,000 images (a config and three layers each, two
drawn from a shared pool of base layers), 10,000 streams and 1,000,000 tag events (10 tags
per stream, 10 revisions per tag) with bulk inserts, starts `image-registry serve` on it
over plain HTTP, then times `ac adm top images` end to end while sampling the resident
memory of the server and its workers over `--runs` runs (median reported). Usage:
`python bench/bench_top.py [--images N ...] [--runs 5] [--reuse DIR]`.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def digest(kind: str, n: int) -> str:
    return f"sha256:{kind}{n:0{64 - len(kind)}x}"


def populate(path: Path, images: int, streams: int, events: int) -> None:
    from imageregistry.metadata.engine import open_engine

    open_engine(f"sqlite:///{path}").dispose()
    db = sqlite3.connect(path)
    now = "2026-01-01 00:00:00.000000"
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.executemany(
        "INSERT INTO repositories (id, namespace, name, uid, resource_version, generation, "
        "created, user_data) VALUES (?, ?, ?, ?, 1, 1, ?, '{}')",
        ((i + 1, f"ns-{i % 100}", f"stream-{i}", str(uuid.uuid4()), now) for i in range(streams)),
    )

    def manifest_rows() -> Iterator[tuple[object, ...]]:
        for i in range(images):
            size = 1000 + (i % 7) * 1_000_000
            yield (
                digest("m", i),
                "application/vnd.oci.image.manifest.v1+json",
                500,
                b"{}",
                digest("c", i),
                str(uuid.uuid4()),
                now,
                now,
                now if i % 3 == 0 else None,
                size,
                3,
                digest("b", i) if i < 50 else digest("l", i),  # 50 base images: parents
            )

    db.executemany(
        "INSERT INTO manifests (digest, media_type, size, content, config_digest, uid, "
        "resource_version, created, pushed, last_pulled, image_metadata, storage_size, "
        "layer_count, top_layer, user_data) "
        "VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, '{}', ?, ?, ?, '{}')",
        manifest_rows(),
    )

    def blob_rows() -> Iterator[tuple[object, ...]]:
        for i in range(images):
            m = digest("m", i)
            yield (m, -1, digest("c", i), 1000)
            yield (m, 0, digest("b", i % 50), 1_000_000)
            yield (m, 1, digest("b", 50 + i % 500), 500_000)
            yield (m, 2, digest("l", i), (i % 7) * 100_000)

    db.executemany(
        "INSERT INTO manifest_blobs (manifest_digest, position, blob_digest, size, media_type) "
        "VALUES (?, ?, ?, ?, 'application/vnd.oci.image.layer.v1.tar+gzip')",
        blob_rows(),
    )
    tags_per_stream = 10
    revisions = max(1, events // (streams * tags_per_stream))

    def event_rows() -> Iterator[tuple[object, ...]]:
        n = 0
        for rev in range(revisions):
            for s in range(streams):
                for t in range(tags_per_stream):
                    image = (s * 10 + t + rev * 7919) % images
                    tag = "latest" if t == 0 else f"v1.{t}"
                    n += 1
                    yield (n, s + 1, tag, digest("m", image), now, rev + 1)

    db.executemany(
        "INSERT INTO tag_events (id, repository_id, tag, digest, created, generation) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        event_rows(),
    )
    db.commit()
    db.execute("ANALYZE")
    db.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its children (granian workers)."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="Timed runs (the median is reported).")
    parser.add_argument(
        "--reuse", type=Path, help="A directory kept from an earlier run (skips populating)."
    )
    args = parser.parse_args()
    root = args.reuse or Path(tempfile.mkdtemp(prefix="bench-top-"))
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "registry.db").exists():
        started = time.monotonic()
        populate(data / "registry.db", args.images, args.streams, args.events)
        print(f"populated in {time.monotonic() - started:.1f}s ({root})")
    port = free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [
            str(BIN / "image-registry"),
            "serve",
            "--data-dir",
            str(data),
            "--listen",
            f"127.0.0.1:{port}",
            "--plain-http",
            "--database",
            f"sqlite:///{data / 'registry.db'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        time.sleep(1.0)
        baseline = tree_rss(server.pid)
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss(server.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        env = {**os.environ, "KUBECONFIG": str(data / "admin.kubeconfig")}
        timings: list[float] = []
        lines: list[str] = []
        for _ in range(args.runs):
            t0 = time.monotonic()
            out = subprocess.run(
                [str(BIN / "ac"), "--server", url, "adm", "top", "images"],
                env=env,
                capture_output=True,
                check=True,
            )
            timings.append(time.monotonic() - t0)
            lines = out.stdout.decode().splitlines()
        done.set()
        sampler.join()
        runs = ", ".join(f"{t:.2f}" for t in timings)
        print(
            f"ac adm top images: median {statistics.median(timings):.2f}s end to end "
            f"({len(timings)} runs: {runs}), {len(lines) - 1} rows"
        )
        print(
            f"server RSS: baseline {baseline / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, "
            f"growth {(peak - baseline) / 2**20:.0f} MiB"
        )
        print("first rows:\n" + "\n".join(lines[:3]))
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
