"""Which async S3 client for the ``s3`` storage driver: ``obstore`` versus ``aiobotocore``.

Both libraries push and pull the same 256 MiB object against the same S3 servers on
loopback, started here: OpenStack Swift with s3api (a real S3 implementation) and moto in
server mode (an emulator). Push is a streamed multipart upload of 8 MiB parts, one part in
flight (how the driver uses either library), fed 1 MiB pieces as a request body would be;
pull streams the object back in ~1 MiB pieces and discards them. Every measurement runs in
a fresh child process so its peak RSS (``ru_maxrss``) belongs to that library and that
operation alone; the child's RSS right after importing the library is reported too.
Figures are medians of ``--runs`` repetitions.

    .venv/bin/pip install -e '.[test,bench]'
    .venv/bin/python bench/bench_s3_libs.py [--size-mib 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MiB = 1 << 20
PART = 8 * MiB
BUCKET = "bench-libs"


def _rss_mib() -> float:
    """Current resident set size (VmRSS) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class _Peak(threading.Thread):
    """Samples VmRSS every 5 ms: the peak *during* the operation (ru_maxrss would also
    count the import of the library, which for obstore is higher than its transfers)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, _rss_mib())


async def _pieces(size: int) -> AsyncIterator[bytes]:
    block = os.urandom(MiB)
    for index in range(size // MiB):
        yield index.to_bytes(8, "big") + block[8:]


async def _obstore(op: str, server: dict[str, str], key: str, size: int) -> None:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        config={
            "endpoint": server["endpoint"],
            "region": server["region"],
            "access_key_id": server["access_key"],
            "secret_access_key": server["secret_key"],
            "virtual_hosted_style_request": False,
        },
        client_options={"allow_http": True},
    )
    if op == "push":
        await obstore.put_async(store, key, _pieces(size), chunk_size=PART, max_concurrency=1)
        return
    result = await obstore.get_async(store, key)
    got = 0
    async for piece in result.stream(min_chunk_size=MiB):
        got += len(piece)
    assert got == size, got


async def _aiobotocore(op: str, server: dict[str, str], key: str, size: int) -> None:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        # botocore >= 1.36 sends CRC32 checksums in aws-chunked bodies by default; S3
        # implementations other than AWS (Swift 2.30 here) refuse them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=server["endpoint"],
        region_name=server["region"],
        aws_access_key_id=server["access_key"],
        aws_secret_access_key=server["secret_key"],
        config=config,
    ) as client:
        if op == "pull":
            response = await client.get_object(Bucket=BUCKET, Key=key)
            got = 0
            async with response["Body"] as body:
                async for piece in body.iter_chunks(MiB):
                    got += len(piece)
            assert got == size, got
            return
        upload = await client.create_multipart_upload(Bucket=BUCKET, Key=key)
        parts: list[dict[str, Any]] = []
        buffer = bytearray()

        async def flush() -> None:
            answer = await client.upload_part(
                Bucket=BUCKET,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=len(parts) + 1,
                Body=bytes(buffer),
            )
            parts.append({"PartNumber": len(parts) + 1, "ETag": answer["ETag"]})
            buffer.clear()

        async for piece in _pieces(size):
            buffer += piece
            if len(buffer) >= PART:
                await flush()
        if buffer:
            await flush()
        await client.complete_multipart_upload(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": parts},
        )


def child(lib: str, op: str, server: dict[str, str], key: str, size: int) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    runner = _obstore if lib == "obstore" else _aiobotocore
    if lib == "obstore":
        import obstore  # noqa: F401
    else:
        import aiobotocore.session  # noqa: F401
    baseline = _rss_mib()
    sampler = _Peak()
    sampler.start()
    start = time.perf_counter()
    asyncio.run(runner(op, server, key, size))
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    peak = max(sampler.peak, _rss_mib())
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "import_rss_mib": baseline}))
    sys.stdout.flush()
    # obstore's runtime sometimes aborts (SIGABRT) while the interpreter tears down a
    # short-lived process; the measurement is complete, so leave without the teardown.
    os._exit(0)


def measure(lib: str, op: str, server: dict[str, str], key: str, size: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", lib, op, json.dumps(server), key, str(size)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"{lib} {op} failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-3000:]}"
        )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(size_mib: int, runs: int) -> list[dict[str, Any]]:
    from tests.support.s3servers import create_bucket, moto_server, swift_server

    size = size_mib * MiB
    rows: list[dict[str, Any]] = []
    for start in (swift_server, moto_server):
        with start() as s3:
            create_bucket(s3, BUCKET)
            server = {
                "endpoint": s3.endpoint,
                "region": s3.region,
                "access_key": s3.access_key,
                "secret_key": s3.secret_key,
            }
            for lib in ("obstore", "aiobotocore"):
                samples: dict[str, list[dict[str, float]]] = {"push": [], "pull": []}
                for attempt in range(runs):
                    key = f"{lib}-{attempt}"
                    for op in ("push", "pull"):
                        samples[op].append(measure(lib, op, server, key, size))
                row: dict[str, Any] = {"server": s3.name, "library": lib}
                for op, found in samples.items():
                    row[f"{op}_mib_s"] = statistics.median(size_mib / s["seconds"] for s in found)
                    row[f"{op}_peak_rss_mib"] = max(s["peak_rss_mib"] for s in found)
                row["import_rss_mib"] = max(
                    s["import_rss_mib"] for v in samples.values() for s in v
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, lib, op, server, key, size = sys.argv
        child(lib, op, json.loads(server), key, int(size))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = run(args.size_mib, args.runs)
    print(f"\n{args.size_mib} MiB object, median of {args.runs}; load {os.getloadavg()[0]:.1f}")
    print("| server | library | push MiB/s | pull MiB/s | peak RSS push / pull (MiB) | import |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['server']} | {row['library']} | {row['push_mib_s']:.0f} |"
            f" {row['pull_mib_s']:.0f} | {row['push_peak_rss_mib']:.0f} /"
            f" {row['pull_peak_rss_mib']:.0f} | {row['import_rss_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
