"""Server memory while receiving one large blob on the ``s3`` driver.

A registry server process (``--storage s3://...``, plain HTTP) over an S3 server on
loopback (moto, an emulator, by default; ``--server swift`` for OpenStack Swift's
s3api) receives one streamed blob (``PUT`` of an upload session, ``--size-mib``, 2 GiB by
default) fed from a generator, so the client holds 1 MiB at a time. The worker's RSS is
sampled every 10 ms; the bench prints it before, at its peak, the growth, and the push
throughput (receiving, staging and committing). ``storage_s3.timeout_seconds`` is raised
to 900: the commit's server-side copy of a 2 GiB blob takes longer than the default 30 s
on Swift here.

    .venv/bin/python bench/bench_s3_memory.py [--server moto|swift] [--size-mib 2048]
        [--part-mib 32]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.s3servers import S3Server, create_bucket, moto_server, swift_server
from tests.support.server import RegistryProcess

MiB = 1 << 20
BUCKET = "bench-memory"


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def _body(size: int, block: bytes) -> Iterator[bytes]:
    for index in range(size // MiB):
        yield index.to_bytes(8, "big") + block[8:]


def measure(s3: S3Server, size: int, part: int) -> dict[str, float]:
    block = os.urandom(MiB)
    hasher = hashlib.sha256()
    for piece in _body(size, block):
        hasher.update(piece)
    digest = "sha256:" + hasher.hexdigest()
    root = Path(tempfile.mkdtemp(prefix="bench-s3mem-"))
    server = RegistryProcess(
        data_dir=root / "data",
        plain_http=True,
        extra_args=["--storage", f"s3://{BUCKET}/mem"],
        env={
            **s3.env(),
            "IMAGE_REGISTRY_STORAGE_S3": json.dumps({"part_size": part, "timeout_seconds": 900}),
        },
    )
    with server.start(timeout=90):
        pids = server.worker_pids()
        before = _rss_mib(pids)
        peak = [before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.01):
                peak[0] = max(peak[0], _rss_mib(pids))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        try:
            with server.client(server.admin_token, timeout=3600) as client:
                location = client.post("/v2/bench/big/blobs/uploads/").headers["location"]
                answer = client.put(
                    location,
                    params={"digest": digest},
                    content=_body(size, block),
                    headers={"Content-Type": "application/octet-stream"},
                )
                assert answer.status_code == 201, answer.text
        finally:
            stop.set()
            sampler.join()
        seconds = time.perf_counter() - started
        with server.client(server.admin_token, timeout=3600) as client:
            client.delete(f"/v2/bench/big/blobs/{digest}")
    return {"before": before, "peak": peak[0], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("moto", "swift"), default="moto")
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--part-mib", type=int, default=32, help="the driver's default")
    args = parser.parse_args()
    size, part = args.size_mib * MiB, args.part_mib * MiB
    with moto_server() if args.server == "moto" else swift_server() as s3:
        create_bucket(s3, BUCKET)
        row = measure(s3, size, part)
    grown = row["peak"] - row["before"]
    print(
        f"{args.server}, {args.size_mib} MiB blob, {args.part_mib} MiB parts: worker RSS "
        f"{row['before']:.0f} MiB before, peak {row['peak']:.0f} MiB (+{grown:.0f} MiB, "
        f"{grown / args.part_mib:.1f} parts); {args.size_mib / row['seconds']:.0f} MiB/s; "
        f"load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
