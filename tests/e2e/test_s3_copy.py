"""The server-side copy that commits a staged upload gets a timeout that grows with the
blob: a store that takes longer than `timeout_seconds` to copy (about 40 s for 2 GiB on
Swift) still commits, where a plain request that slow answers 503.

moto (an emulator) behind a forwarding proxy (tests/support/s3proxy.py) that hands the
copy's answer over late; every request still reaches moto unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from imageregistry.content.digest import Digest
from imageregistry.storage.errors import StorageUnavailable
from imageregistry.storage.s3 import S3BlobStore
from tests.support.s3proxy import S3Proxy
from tests.support.s3servers import S3Server, create_bucket, moto_server

TIMEOUT = 2  # storage_s3.timeout_seconds of the store under test
LATE = 5  # seconds the proxy holds back the copy's answer: beyond TIMEOUT


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[S3Proxy]:
    with S3Proxy(s3.endpoint).running() as running:
        yield running


def is_copy_to_a_blob(method: str, target: str) -> bool:
    """CopyObject onto a blob's key: a PUT without a query (a part upload has one)."""
    return method == "PUT" and "/blobs/" in target and "?" not in target


def store_for(s3: S3Server, proxy: S3Proxy, bucket: str) -> S3BlobStore:
    create_bucket(s3, bucket)
    return S3BlobStore(s3.settings(bucket, "r", endpoint=proxy.endpoint, timeout_seconds=TIMEOUT))


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def test_a_slow_copy_at_commit_still_commits(s3: S3Server, proxy: S3Proxy) -> None:
    store = store_for(s3, proxy, f"copy-{os.getpid()}")
    data = os.urandom(256 * 1024)
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())

    async def scenario() -> bytes:
        await store.start_upload("u1")
        await store.append_upload("u1", 0, chunks(data))  # staged: the commit copies it
        proxy.delay_response(is_copy_to_a_blob, LATE)
        await store.commit_upload("u1", digest, len(data))
        return await store.read_all(digest)

    assert asyncio.run(scenario()) == data
    assert any(is_copy_to_a_blob(m, t) for m, t in proxy.requests)


def test_any_other_request_that_slow_still_answers_unavailable(
    s3: S3Server, proxy: S3Proxy
) -> None:
    store = store_for(s3, proxy, f"slow-{os.getpid()}")
    data = b"a blob whose HEAD is answered late"
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())

    async def scenario() -> None:
        await store.put_blob(data, digest)
        proxy.delay_response(lambda method, target: method == "HEAD", LATE)
        await store.stat(digest)

    with pytest.raises(StorageUnavailable, match="timed out"):
        asyncio.run(scenario())
