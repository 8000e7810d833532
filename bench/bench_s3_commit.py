"""What committing an upload costs on the ``s3`` driver, at 1 GiB, against Swift s3api.

Three shapes of the same 1 GiB upload, each through real driver instances (a second
instance stands in for another replica):

- ``one process``: one append, committed by the same instance. The digest is known from
  streaming; commit is a server-side copy of the one staged segment.
- ``commit elsewhere``: one append on A, commit on B. B finds the digest A recorded in the
  bucket; commit is the same server-side copy.
- ``moved between replicas``: half on A, half on B, commit on A. No process saw every
  byte, so commit re-reads the staged bytes to hash them while streaming them into the
  blob key (multipart), and only completes that upload when the digest matches.

    .venv/bin/python bench/bench_s3_commit.py [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imageregistry.content.digest import Digest
from imageregistry.storage.s3 import S3BlobStore, create_bucket_async
from imageregistry.storage.s3config import S3Settings

MiB = 1 << 20
BUCKET = "bench-commit"


async def _pieces(start: int, stop: int, block: bytes) -> AsyncIterator[bytes]:
    for index in range(start // MiB, stop // MiB):
        yield index.to_bytes(8, "big") + block[8:]


def _digest(size: int, block: bytes) -> Digest:
    hasher = hashlib.sha256()
    for index in range(size // MiB):
        hasher.update(index.to_bytes(8, "big") + block[8:])
    return Digest("sha256", hasher.hexdigest())


async def _shape(
    name: str, settings: S3Settings, size: int, block: bytes, digest: Digest
) -> tuple[str, float, float]:
    a, b = S3BlobStore(settings), S3BlobStore(settings)
    upload_id = f"bench-{name.replace(' ', '-')}"
    await a.start_upload(upload_id)
    start = time.perf_counter()
    if name == "moved between replicas":
        half = size // 2
        await a.append_upload(upload_id, 0, _pieces(0, half, block))
        await b.append_upload(upload_id, half, _pieces(half, size, block))
    else:
        await a.append_upload(upload_id, 0, _pieces(0, size, block))
    appended = time.perf_counter() - start
    committer = b if name == "commit elsewhere" else a
    start = time.perf_counter()
    await committer.commit_upload(upload_id, digest, size)
    committed = time.perf_counter() - start
    await a.delete(digest)
    return name, appended, committed


async def run(size_mib: int) -> None:
    from tests.support.s3servers import swift_server

    size = size_mib * MiB
    block = os.urandom(MiB)
    digest = _digest(size, block)
    with swift_server() as s3:
        settings = S3Settings(
            bucket=BUCKET,
            endpoint=s3.endpoint,
            region=s3.region,
            access_key_id=s3.access_key,
            secret_access_key=s3.secret_key,
        )
        await create_bucket_async(settings)
        rows = [
            await _shape(name, settings, size, block, digest)
            for name in ("one process", "commit elsewhere", "moved between replicas")
        ]
    print(f"\n{size_mib} MiB on Swift s3api; load {os.getloadavg()[0]:.1f}")
    print("| upload | appends (s) | commit (s) |")
    print("|---|---|---|")
    for name, appended, committed in rows:
        print(f"| {name} | {appended:.1f} | {committed:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    asyncio.run(run(parser.parse_args().size_mib))


if __name__ == "__main__":
    main()
