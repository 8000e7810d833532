"""Shared blob store contract: every driver must pass this suite unchanged.

Each test gets ``reopen``, a factory that builds a fresh store instance over the same
underlying storage (same root directory / same memory backend). A second instance stands
in for another replica or a restarted process: it has none of the first one's in-memory
state, so anything that only worked thanks to process memory fails here.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import obstore
import pytest

from imageregistry.content.digest import Digest, digest_of
from imageregistry.storage import (
    BlobInfo,
    BlobStore,
    ConfigurationError,
    FilesystemBlobStore,
    InMemoryBlobStore,
    blob_key,
    open_blob_store,
)
from imageregistry.storage.errors import (
    BlobNotFound,
    DigestMismatch,
    InvalidRange,
    InvalidUploadId,
    SizeMismatch,
    StoredSizeDiffers,
    UploadExists,
    UploadInProgress,
    UploadNotFound,
    UploadOffsetMismatch,
    UploadTooLarge,
)
from imageregistry.storage.memory import MemoryBackend
from imageregistry.storage.s3 import S3BlobStore
from tests.support.s3servers import (
    S3Server,
    boto3_client,
    create_bucket,
    moto_server,
    swift_server,
)

pytestmark = pytest.mark.anyio

Reopen = Callable[[], BlobStore]
UPLOAD = "3f1b2c1e-8f0a-4d7e-9c55-0c8f4a1b2d3e"
OTHER = "7d2a9b40-1c3e-4f5a-8b6d-9e0f1a2b3c4d"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def moto() -> Iterator[S3Server]:
    """moto in server mode: an *emulator* of AWS S3, not a real store (see Swift below)."""
    with moto_server() as server:
        yield server


@pytest.fixture(scope="module")
def swift() -> Iterator[S3Server]:
    """OpenStack Swift's proxy with s3api: a real S3 implementation on loopback."""
    with swift_server() as server:
        yield server


_buckets = itertools.count()


def s3_reopen(server: S3Server) -> Reopen:
    """A fresh bucket per test; each ``reopen()`` is a new driver instance over it."""
    bucket = f"contract-{os.getpid()}-{next(_buckets)}"
    create_bucket(server, bucket)
    settings = server.settings(bucket, "registry/blobs", part_size=5 << 20)
    return lambda: S3BlobStore(settings)


@pytest.fixture(params=["filesystem", "filesystem-buffered", "memory", "s3-moto", "s3-swift"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Reopen:
    if request.param == "filesystem":  # O_DIRECT staging where the filesystem supports it
        return lambda: FilesystemBlobStore(tmp_path / "store")
    if request.param == "filesystem-buffered":
        return lambda: FilesystemBlobStore(tmp_path / "store", direct_io=False)
    if request.param == "s3-moto":
        return s3_reopen(request.getfixturevalue("moto"))
    if request.param == "s3-swift":
        return s3_reopen(request.getfixturevalue("swift"))
    backend = MemoryBackend()
    return lambda: InMemoryBlobStore(backend)


@pytest.fixture
def store(reopen: Reopen) -> BlobStore:
    return reopen()


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await anyio.sleep(0)
        yield part


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([block async for block in stream])


async def upload(store: BlobStore, upload_id: str, data: bytes, digest: Digest) -> None:
    await store.start_upload(upload_id)
    await store.append_upload(upload_id, 0, chunks_of(data))
    await store.commit_upload(upload_id, digest)


async def all_blobs(store: BlobStore) -> dict[Digest, int]:
    return {blob.digest: blob.size async for blob in store.iter_blobs()}


async def all_uploads(store: BlobStore) -> dict[str, int]:
    return {item.upload_id: item.size async for item in store.iter_uploads()}


async def test_chunked_append_in_order_then_commit(store: BlobStore) -> None:
    parts = [b"a" * 10, b"", b"bc" * 700_000, b"d"]
    data = b"".join(parts)
    await store.start_upload(UPLOAD)
    assert await store.upload_size(UPLOAD) == 0
    offset = 0
    for part in parts:
        offset = await store.append_upload(UPLOAD, offset, chunks_of(part[:3], part[3:]))
        assert await store.upload_size(UPLOAD) == offset
    assert offset == len(data)
    info = await store.commit_upload(UPLOAD, digest_of(data), expected_size=len(data))
    assert (info.digest, info.size) == (digest_of(data), len(data))
    assert await store.stat(digest_of(data)) == len(data)
    assert await store.read_all(digest_of(data)) == data
    with pytest.raises(UploadNotFound):
        await store.upload_size(UPLOAD)


async def test_out_of_order_chunk_is_rejected_and_session_survives(store: BlobStore) -> None:
    await store.start_upload(UPLOAD)
    assert await store.append_upload(UPLOAD, 0, chunks_of(b"first-")) == 6
    for wrong in (0, 3, 7, 100):
        with pytest.raises(UploadOffsetMismatch) as caught:
            await store.append_upload(UPLOAD, wrong, chunks_of(b"WRONG"))
        assert (caught.value.offset, caught.value.size) == (wrong, 6)
        assert await store.upload_size(UPLOAD) == 6
    assert await store.append_upload(UPLOAD, 6, chunks_of(b"second")) == 12
    info = await store.commit_upload(UPLOAD, digest_of(b"first-second"))
    assert await store.read_all(info.digest) == b"first-second"


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
async def test_commit_verifies_either_algorithm(store: BlobStore, algorithm: str) -> None:
    data = os.urandom(3 << 20)
    digest = digest_of(data, algorithm)
    await store.start_upload(UPLOAD)
    await store.append_upload(UPLOAD, 0, chunks_of(data[:100], data[100:]))
    assert (await store.commit_upload(UPLOAD, digest)).size == len(data)
    assert await store.read_all(digest) == data
    assert await all_blobs(store) == {digest: len(data)}


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
async def test_digest_mismatch_discards_everything(store: BlobStore, algorithm: str) -> None:
    wrong = digest_of(b"something else", algorithm)
    await store.start_upload(UPLOAD)
    await store.append_upload(UPLOAD, 0, chunks_of(b"actual content"))
    with pytest.raises(DigestMismatch) as caught:
        await store.commit_upload(UPLOAD, wrong)
    assert caught.value.actual == digest_of(b"actual content", algorithm)
    assert await store.stat(wrong) is None
    assert await store.stat(digest_of(b"actual content", algorithm)) is None
    assert await all_blobs(store) == {}
    assert await all_uploads(store) == {}
    with pytest.raises(UploadNotFound):
        await store.upload_size(UPLOAD)


async def test_size_mismatch_discards_everything(store: BlobStore) -> None:
    await store.start_upload(UPLOAD)
    await store.append_upload(UPLOAD, 0, chunks_of(b"12345"))
    with pytest.raises(SizeMismatch):
        await store.commit_upload(UPLOAD, digest_of(b"12345"), expected_size=6)
    assert await store.stat(digest_of(b"12345")) is None
    assert await all_uploads(store) == {}


async def test_same_content_twice_is_stored_once(store: BlobStore) -> None:
    data = b"layer bytes" * 1000
    await upload(store, UPLOAD, data, digest_of(data))
    await upload(store, OTHER, data, digest_of(data))
    assert await all_blobs(store) == {digest_of(data): len(data)}
    assert await all_uploads(store) == {}
    assert await store.read_all(digest_of(data)) == data


def damage(store: BlobStore, digest: Digest, data: bytes) -> None:
    """Replace the stored bytes of ``digest`` behind the driver's back (a failing disk)."""
    if isinstance(store, InMemoryBlobStore):
        _, modified = store.backend.blobs[digest]
        store.backend.blobs[digest] = (data, modified)
    elif isinstance(store, S3BlobStore):  # rewrite the object with a plain PUT
        obstore.put(store._store, blob_key(digest), data)
    else:
        assert isinstance(store, FilesystemBlobStore)
        (store.root / "blobs" / digest.algorithm / digest.hex[:2] / digest.hex).write_bytes(data)


async def test_a_commit_replaces_a_stored_copy_of_another_size(store: BlobStore) -> None:
    data = os.urandom(300_000)
    digest = digest_of(data)
    await upload(store, UPLOAD, data, digest)
    damage(store, digest, data[:100])
    assert (await store.hash_blob(digest)).size == 100
    await upload(store, OTHER, data, digest)
    assert await store.read_all(digest) == data
    assert await store.hash_blob(digest) == BlobInfo(digest, len(data))
    damage(store, digest, data + b"extra")
    assert (await store.put_blob(data, digest)).size == len(data)
    assert await store.read_all(digest) == data


async def test_a_same_size_copy_is_replaced_only_when_known_corrupt(store: BlobStore) -> None:
    data = os.urandom(300_000)
    digest = digest_of(data)
    await upload(store, UPLOAD, data, digest)
    flipped = bytes([data[0] ^ 1]) + data[1:]
    damage(store, digest, flipped)
    assert await store.hash_blob(digest) == BlobInfo(digest_of(flipped), len(data))
    await upload(store, OTHER, data, digest)  # dedup: an intact-looking copy stays
    assert await store.read_all(digest) == flipped
    await store.start_upload(OTHER)
    await store.append_upload(OTHER, 0, chunks_of(data))
    await store.commit_upload(OTHER, digest, replace=True)
    assert await store.read_all(digest) == data
    damage(store, digest, flipped)
    await store.put_blob(data, digest, replace=True)
    assert await store.hash_blob(digest) == BlobInfo(digest, len(data))
    assert await all_uploads(store) == {}


async def test_hash_blob_of_a_missing_blob(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await store.hash_blob(digest_of(b"never stored"))


async def test_empty_blob(store: BlobStore) -> None:
    await store.start_upload(UPLOAD)
    info = await store.commit_upload(UPLOAD, digest_of(b""), expected_size=0)
    assert info.size == 0
    assert await store.stat(digest_of(b"")) == 0
    assert await collect(await store.read(digest_of(b""))) == b""


async def test_ranged_reads(store: BlobStore) -> None:
    data = os.urandom((2 << 20) + 123)
    digest = digest_of(data)
    await store.put_blob(data, digest)
    assert await collect(await store.read(digest)) == data
    for start, end in [(0, 1), (5, 10), (1 << 20, (1 << 20) + 5), (7, None), (len(data), None)]:
        assert await collect(await store.read(digest, start, end)) == data[start:end]
    for start, end in [(-1, None), (10, 5), (0, len(data) + 1), (len(data) + 1, None)]:
        with pytest.raises(InvalidRange):
            await store.read(digest, start, end)
    with pytest.raises(BlobNotFound):
        await store.read(digest_of(b"missing"))
    with pytest.raises(BlobNotFound):
        await store.read_all(digest_of(b"missing"))


async def test_a_read_with_the_recorded_size_refuses_a_blob_of_another_size(
    store: BlobStore,
) -> None:
    data = os.urandom((1 << 20) + 17)
    digest = digest_of(data)
    await store.put_blob(data, digest)
    whole = await store.read(digest, expected_size=len(data))
    assert await collect(whole) == data
    ranged = await store.read(digest, 5, 10, expected_size=len(data))
    assert await collect(ranged) == data[5:10]
    for start, end in [(0, None), (5, 10)]:  # the whole blob (one GET on S3) and a range
        for recorded in (len(data) - 1, len(data) + 1, 0):
            with pytest.raises(StoredSizeDiffers) as differs:
                await store.read(digest, start, end, expected_size=recorded)
            assert differs.value.stored == len(data)
    with pytest.raises(BlobNotFound):
        await store.read(digest_of(b"missing"), expected_size=7)
    empty = digest_of(b"")
    await store.put_blob(b"", empty)
    assert await collect(await store.read(empty, expected_size=0)) == b""
    with pytest.raises(StoredSizeDiffers):
        await store.read(empty, expected_size=1)


async def test_put_blob_verifies(store: BlobStore) -> None:
    info = await store.put_blob(b'{"config": true}', digest_of(b'{"config": true}', "sha512"))
    assert info.size == 16
    assert await store.read_all(info.digest) == b'{"config": true}'
    await store.put_blob(b'{"config": true}', info.digest)  # idempotent
    with pytest.raises(DigestMismatch):
        await store.put_blob(b"tampered", digest_of(b"original"))
    assert await all_blobs(store) == {info.digest: 16}
    assert await all_uploads(store) == {}


async def test_delete(store: BlobStore) -> None:
    digest = digest_of(b"doomed")
    await store.put_blob(b"doomed", digest)
    assert await store.delete(digest) is True
    assert await store.stat(digest) is None
    assert await store.delete(digest) is False
    with pytest.raises(BlobNotFound):
        await store.read(digest)
    assert await all_blobs(store) == {}


async def test_delete_many_takes_a_batch_and_tolerates_absent_blobs(store: BlobStore) -> None:
    kept, doomed = b"kept", [b"doomed one", b"doomed two", b"doomed three"]
    for data in [kept, *doomed]:
        await store.put_blob(data, digest_of(data))
    absent = digest_of(b"never stored")
    await store.delete_many([*map(digest_of, doomed), absent])
    assert await all_blobs(store) == {digest_of(kept): len(kept)}
    await store.delete_many([digest_of(doomed[0])])  # again (a resumed GC): no error
    await store.delete_many([])
    assert await store.stat(digest_of(kept)) == len(kept)


async def test_a_store_without_a_crash_has_no_pending_writes(store: BlobStore) -> None:
    """Filesystem and memory never have any; S3 has none after complete appends."""
    await store.start_upload(UPLOAD)
    await store.append_upload(UPLOAD, 0, chunks_of(b"staged"))
    assert [w async for w in store.iter_pending_writes()] == []


async def test_cancel(store: BlobStore) -> None:
    await store.start_upload(UPLOAD)
    await store.append_upload(UPLOAD, 0, chunks_of(b"partial"))
    await store.cancel_upload(UPLOAD)
    assert await all_uploads(store) == {}
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: store.upload_size(UPLOAD),
        lambda: store.append_upload(UPLOAD, 7, chunks_of(b"more")),
        lambda: store.commit_upload(UPLOAD, digest_of(b"partial")),
        lambda: store.cancel_upload(UPLOAD),
    ]
    for attempt in attempts:
        with pytest.raises(UploadNotFound):
            await attempt()
    assert await store.stat(digest_of(b"partial")) is None


async def test_start_twice_is_refused(store: BlobStore) -> None:
    await store.start_upload(UPLOAD)
    await store.append_upload(UPLOAD, 0, chunks_of(b"kept"))
    with pytest.raises(UploadExists):
        await store.start_upload(UPLOAD)
    assert await store.upload_size(UPLOAD) == 4


async def test_iter_blobs_and_uploads(store: BlobStore) -> None:
    a, b = b"alpha", b"beta" * 10
    await store.put_blob(a, digest_of(a))
    await store.put_blob(b, digest_of(b, "sha512"))
    await store.start_upload(UPLOAD)
    await store.append_upload(UPLOAD, 0, chunks_of(b"123"))
    await store.start_upload(OTHER)
    assert await all_blobs(store) == {digest_of(a): 5, digest_of(b, "sha512"): 40}
    assert await all_uploads(store) == {UPLOAD: 3, OTHER: 0}
    async for item in store.iter_uploads():
        assert item.modified.tzinfo is not None
    async for blob in store.iter_blobs():
        assert blob.modified.tzinfo is not None
    for found in [item async for item in store.iter_uploads()]:
        await store.cancel_upload(found.upload_id)  # abandoned-upload cleanup
    assert await all_uploads(store) == {}


async def test_upload_continues_on_another_instance(reopen: Reopen) -> None:
    data = os.urandom(5 << 20)
    first, second = reopen(), reopen()
    await first.start_upload(UPLOAD)
    await first.append_upload(UPLOAD, 0, chunks_of(data[:1000]))
    assert await second.upload_size(UPLOAD) == 1000
    await second.append_upload(UPLOAD, 1000, chunks_of(data[1000 : 3 << 20]))
    # ``first`` still holds hashers for the first 1000 bytes only: they must not be used.
    end = await first.append_upload(UPLOAD, 3 << 20, chunks_of(data[3 << 20 :]))
    assert end == len(data)
    info = await first.commit_upload(UPLOAD, digest_of(data), expected_size=len(data))
    assert await second.read_all(info.digest) == data


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
async def test_commit_from_a_fresh_instance_verifies(reopen: Reopen, algorithm: str) -> None:
    data = os.urandom(2 << 20)
    first = reopen()
    await first.start_upload(UPLOAD)
    await first.append_upload(UPLOAD, 0, chunks_of(data[:12345], data[12345:]))
    restarted = reopen()
    info = await restarted.commit_upload(UPLOAD, digest_of(data, algorithm))
    assert await first.read_all(info.digest) == data


async def test_stale_hashes_after_other_instance_appends(reopen: Reopen) -> None:
    first, second = reopen(), reopen()
    await first.start_upload(UPLOAD)
    await first.append_upload(UPLOAD, 0, chunks_of(b"one-"))
    await second.append_upload(UPLOAD, 4, chunks_of(b"two-"))
    await first.append_upload(UPLOAD, 8, chunks_of(b"three"))
    info = await first.commit_upload(UPLOAD, digest_of(b"one-two-three"))
    assert await second.read_all(info.digest) == b"one-two-three"


@pytest.mark.parametrize(
    "bad_id",
    ["../escape", "..", ".", "a/b", "", "x" * 65, "a\x00b", "/abs", "id with space", "abc\n"],
)
async def test_path_trick_upload_ids_are_rejected(store: BlobStore, bad_id: str) -> None:
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: store.start_upload(bad_id),
        lambda: store.append_upload(bad_id, 0, chunks_of(b"x")),
        lambda: store.upload_size(bad_id),
        lambda: store.commit_upload(bad_id, digest_of(b"x")),
        lambda: store.cancel_upload(bad_id),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidUploadId):
            await attempt()
    assert await all_uploads(store) == {}


async def test_path_tricks_never_touch_the_filesystem(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "store"
    store = FilesystemBlobStore(root)
    await store.start_upload(UPLOAD)  # create the tree so an escape would have a target
    (tmp_path / "deep" / "victim").mkdir()
    (tmp_path / "deep" / "victim" / "data").write_bytes(b"precious")
    for bad_id in ["../../victim", "../../../deep/victim"]:
        with pytest.raises(InvalidUploadId):
            await store.cancel_upload(bad_id)
        with pytest.raises(InvalidUploadId):
            await store.append_upload(bad_id, 8, chunks_of(b"overwrite"))
    assert (tmp_path / "deep" / "victim" / "data").read_bytes() == b"precious"


async def test_large_streamed_upload(store: BlobStore) -> None:
    block = os.urandom(1 << 20)
    hasher = hashlib.sha256()

    async def stream() -> AsyncIterator[bytes]:
        for i in range(64 * 16):  # 64 MiB in 64 KiB pieces, each distinct
            piece = i.to_bytes(8, "big") + block[(i % 16) << 16 : ((i % 16) + 1) << 16][8:]
            hasher.update(piece)
            yield piece

    await store.start_upload(UPLOAD)
    assert await store.append_upload(UPLOAD, 0, stream()) == 64 << 20
    digest = Digest("sha256", hasher.hexdigest())
    info = await store.commit_upload(UPLOAD, digest, expected_size=64 << 20)
    assert await store.stat(info.digest) == 64 << 20
    read_back = hashlib.sha256()
    async for piece in await store.read(digest):
        read_back.update(piece)
    assert read_back.hexdigest() == digest.hex


async def test_mixed_chunk_sizes_keep_order_and_digest(store: BlobStore) -> None:
    # Tiny, coalesced and large chunks interleaved across several 1 MiB blocks, in two
    # appends, so kept references, coalesced copies and block boundaries all take part.
    sizes = [1, 7, (64 << 10) - 1, 64 << 10, 3, 300_000, (1 << 20) + 5, 2, 100_000, 1 << 16]
    parts = [os.urandom(n) for n in sizes * 2]
    first, second = parts[: len(sizes)], parts[len(sizes) :]
    data = b"".join(parts)
    await store.start_upload(UPLOAD)
    middle = await store.append_upload(UPLOAD, 0, chunks_of(*first))
    assert middle == sum(sizes)
    assert await store.append_upload(UPLOAD, middle, chunks_of(*second)) == len(data)
    info = await store.commit_upload(UPLOAD, digest_of(data), expected_size=len(data))
    assert await collect(await store.read(info.digest)) == data


async def test_unaligned_appends_across_many_blocks(store: BlobStore) -> None:
    # Appends that start mid-page and span several 2 MiB staging blocks, so the buffered
    # head, the direct-written aligned blocks and the buffered tail all take part.
    data = os.urandom((9 << 20) + 12_345)
    cuts = [0, 5, (5 << 20) + 3, (5 << 20) + 4, 7 << 20, len(data)]
    await store.start_upload(UPLOAD)
    for begin, end in itertools.pairwise(cuts):
        piece = data[begin:end]
        parts = [piece[i : i + 300_001] for i in range(0, len(piece), 300_001)]
        assert await store.append_upload(UPLOAD, begin, chunks_of(*parts)) == end
        assert await store.upload_size(UPLOAD) == end
    info = await store.commit_upload(UPLOAD, digest_of(data), expected_size=len(data))
    assert await collect(await store.read(info.digest)) == data


async def test_staged_upload_is_never_visible(reopen: Reopen) -> None:
    data = b"complete content, never committed"
    store = reopen()
    await store.start_upload(UPLOAD)
    await store.append_upload(UPLOAD, 0, chunks_of(data))
    for view in (store, reopen()):  # also after a "crash" (fresh instance, same storage)
        for algorithm in ("sha256", "sha512"):
            assert await view.stat(digest_of(data, algorithm)) is None
            assert view.local_path(digest_of(data, algorithm)) is None
            with pytest.raises(BlobNotFound):
                await view.read(digest_of(data, algorithm))
        assert await all_blobs(view) == {}
        assert await all_uploads(view) == {UPLOAD: len(data)}


async def test_limit_rolls_back_the_chunk(store: BlobStore) -> None:
    await store.start_upload(UPLOAD)
    await store.append_upload(UPLOAD, 0, chunks_of(b"head-"))
    with pytest.raises(UploadTooLarge):
        await store.append_upload(UPLOAD, 5, chunks_of(b"12", b"34", b"5"), limit=4)
    assert await store.upload_size(UPLOAD) == 5
    assert await store.append_upload(UPLOAD, 5, chunks_of(b"12", b"34"), limit=4) == 9
    info = await store.commit_upload(UPLOAD, digest_of(b"head-1234"))
    assert await store.read_all(info.digest) == b"head-1234"


async def test_interrupted_stream_can_be_resumed(store: BlobStore) -> None:
    data = os.urandom(3 << 20)

    async def dies_midway() -> AsyncIterator[bytes]:
        yield data[: 1 << 20]
        yield data[1 << 20 : (1 << 20) + 500]
        raise ConnectionResetError("client went away")

    await store.start_upload(UPLOAD)
    with pytest.raises(ConnectionResetError):
        await store.append_upload(UPLOAD, 0, dies_midway())
    kept = await store.upload_size(UPLOAD)
    assert kept <= (1 << 20) + 500
    assert kept == await reopen_size(store)
    await store.append_upload(UPLOAD, kept, chunks_of(data[kept:]))
    info = await store.commit_upload(UPLOAD, digest_of(data, "sha512"))
    assert await store.read_all(info.digest) == data


async def reopen_size(store: BlobStore) -> int:
    return {item.upload_id: item.size async for item in store.iter_uploads()}[UPLOAD]


async def test_busy_upload_refuses_a_second_writer(store: BlobStore) -> None:
    gate = anyio.Event()
    entered = anyio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first"
        entered.set()
        await gate.wait()
        yield b"-rest"

    await store.start_upload(UPLOAD)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(store.append_upload, UPLOAD, 0, slow())
        await entered.wait()
        with pytest.raises((UploadInProgress, UploadOffsetMismatch)):
            await store.append_upload(UPLOAD, 0, chunks_of(b"intruder"))
        with pytest.raises(UploadInProgress):
            await store.commit_upload(UPLOAD, digest_of(b"first-rest"))
        gate.set()
    info = await store.commit_upload(UPLOAD, digest_of(b"first-rest"))
    assert await store.read_all(info.digest) == b"first-rest"


async def test_local_path(store: BlobStore) -> None:
    digest = digest_of(b"zero-copy")
    await store.put_blob(b"zero-copy", digest)
    path = store.local_path(digest)
    if isinstance(store, FilesystemBlobStore):
        assert path is not None
        assert Path(path).read_bytes() == b"zero-copy"
    else:
        assert path is None
    assert store.local_path(digest_of(b"absent")) is None
    if isinstance(store, S3BlobStore):  # a presigned GET any HTTP client can follow
        url = await store.redirect_url(digest)
        assert url is not None
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).content == b"zero-copy"
            # Signing asks nothing of the store: the caller checked the blob is there.
            absent = await store.redirect_url(digest_of(b"absent"))
            assert absent is not None
            assert (await client.get(absent)).status_code == 404
    else:
        assert await store.redirect_url(digest) is None


async def test_stray_files_are_not_blobs(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    digest = digest_of(b"real")
    await store.put_blob(b"real", digest)
    prefix = tmp_path / "blobs" / "sha256" / digest.hex[:2]
    (prefix / "tmp-upload-123").write_bytes(b"junk")
    (prefix / digest.hex.upper()).write_bytes(b"junk")
    (tmp_path / "blobs" / "sha256" / "zz").mkdir()
    (tmp_path / "blobs" / "sha256" / "zz" / ("0" * 64)).write_bytes(b"junk")
    (tmp_path / "uploads" / "not valid!").mkdir(parents=True)
    assert await all_blobs(store) == {digest: 4}
    assert await all_uploads(store) == {}


def test_open_blob_store_selects_driver(tmp_path: Path) -> None:
    for location in (str(tmp_path / "a"), f"file://{tmp_path}/b", f"file://localhost{tmp_path}"):
        assert isinstance(open_blob_store(location), FilesystemBlobStore)
    fs = open_blob_store(f"file://{tmp_path}/with%20space")
    assert isinstance(fs, FilesystemBlobStore)
    assert fs.root == tmp_path / "with space"
    assert isinstance(open_blob_store("memory://"), InMemoryBlobStore)


def test_open_blob_store_selects_s3() -> None:
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": "eu-west-3"}
    store = open_blob_store("s3://bucket/some/prefix/", s3={"part_size": 6 << 20}, env=env)
    assert isinstance(store, S3BlobStore)
    assert (store.settings.bucket, store.settings.prefix) == ("bucket", "some/prefix")
    assert (store.settings.endpoint, store.settings.region) == ("http://127.0.0.1:9", "eu-west-3")
    assert (store.settings.part_size, store.settings.path_style) == (6 << 20, True)


@pytest.mark.parametrize(
    "location",
    [
        "s3://bucket?region=x",
        "s3://user:pw@bucket/x",
        "s3://b/a/../c",
        "s3:///x",
        "gcs://x",
        "file://otherhost/x",
        "file:///x?fsync=0",
        "",
    ],
)
def test_open_blob_store_refuses_unknown(location: str) -> None:
    with pytest.raises(ConfigurationError):
        open_blob_store(location)


async def test_s3_failures_leave_no_multipart_upload_behind(reopen: Reopen) -> None:
    """A stream that dies, and a multi-segment commit with the wrong digest, abort their
    multipart uploads: the bucket holds no incomplete upload and no object afterwards."""
    store = reopen()
    if not isinstance(store, S3BlobStore):
        pytest.skip("S3 only: multipart uploads")
    first, second = os.urandom(7 << 20), os.urandom(6 << 20)

    async def dies() -> AsyncIterator[bytes]:
        yield first
        yield second
        raise ConnectionResetError("client went away")

    await store.start_upload(UPLOAD)
    with pytest.raises(ConnectionResetError):
        await store.append_upload(UPLOAD, 0, dies())
    await store.append_upload(UPLOAD, 0, chunks_of(first))
    await store.append_upload(UPLOAD, len(first), chunks_of(second))
    with pytest.raises(DigestMismatch):
        await store.commit_upload(UPLOAD, digest_of(b"not this"))
    settings = store.settings
    client = _bucket(store)
    assert client.list_multipart_uploads(Bucket=settings.bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=settings.bucket).get("Contents", []) == []


# A monolithic push announces its digest with the one append (``final``): object storage
# drivers stream it straight to the blob's key; the results are the same on every driver.


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
async def test_whole_blob_append_announced_as_final(reopen: Reopen, algorithm: str) -> None:
    data = os.urandom(12 << 20)  # several parts of an S3 multipart upload
    digest = digest_of(data, algorithm)
    store = reopen()
    await store.start_upload(UPLOAD)
    assert await store.append_upload(
        UPLOAD, 0, chunks_of(data[:100], data[100:]), final=digest
    ) == len(data)
    assert await store.upload_size(UPLOAD) == len(data)
    other = reopen()  # the commit may come from another replica
    assert await other.upload_size(UPLOAD) == len(data)
    assert await all_uploads(other) == {UPLOAD: len(data)}
    info = await other.commit_upload(UPLOAD, digest, expected_size=len(data))
    assert (info.digest, info.size) == (digest, len(data))
    assert await store.read_all(digest) == data
    assert await all_blobs(store) == {digest: len(data)}
    assert await all_uploads(store) == {}


async def test_final_append_of_other_bytes_publishes_nothing(store: BlobStore) -> None:
    data = os.urandom(7 << 20)
    announced = digest_of(b"what the client said it would send")
    await store.start_upload(UPLOAD)
    await store.append_upload(UPLOAD, 0, chunks_of(data), final=announced)
    with pytest.raises(DigestMismatch) as caught:
        await store.commit_upload(UPLOAD, announced)
    assert caught.value.actual == digest_of(data)
    assert await store.stat(announced) is None
    assert await store.stat(digest_of(data)) is None
    assert await all_blobs(store) == {}
    assert await all_uploads(store) == {}


async def test_final_append_over_the_limit_keeps_nothing(store: BlobStore) -> None:
    data = b"0123456789"
    await store.start_upload(UPLOAD)
    with pytest.raises(UploadTooLarge):
        await store.append_upload(UPLOAD, 0, chunks_of(data), limit=9, final=digest_of(data))
    assert await store.upload_size(UPLOAD) == 0
    assert await store.stat(digest_of(data)) is None
    await store.append_upload(UPLOAD, 0, chunks_of(data), limit=10, final=digest_of(data))
    assert await store.read_all((await store.commit_upload(UPLOAD, digest_of(data))).digest) == data


def _bucket(store: S3BlobStore) -> Any:
    settings = store.settings
    return boto3_client(
        settings.endpoint, settings.region, settings.access_key_id, settings.secret_access_key
    )


async def test_s3_whole_blob_push_is_written_once(reopen: Reopen) -> None:
    """Announced as final, the blob goes to its own key while it streams: no staged copy
    that the commit would have to copy again inside the store (a full read and write of
    the blob on Swift, Ceph RGW or MinIO). A wrong digest leaves no upload behind."""
    store = reopen()
    if not isinstance(store, S3BlobStore):
        pytest.skip("S3 only: where the bytes go inside the bucket")
    data = os.urandom(11 << 20)
    await store.start_upload(UPLOAD)
    await store.append_upload(UPLOAD, 0, chunks_of(data), final=digest_of(data))
    bucket = _bucket(store)
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket=store.settings.bucket)["Contents"]]
    assert [k for k in keys if "/data/" in k] == []
    assert await store.stat(digest_of(data)) == len(data)
    await store.commit_upload(UPLOAD, digest_of(data))
    await store.start_upload(OTHER)
    await store.append_upload(OTHER, 0, chunks_of(data[1:], b"x"), final=digest_of(data))
    with pytest.raises(DigestMismatch):
        await store.commit_upload(OTHER, digest_of(data))
    assert bucket.list_multipart_uploads(Bucket=store.settings.bucket).get("Uploads", []) == []
    assert await all_blobs(store) == {digest_of(data): len(data)}
    assert await store.read_all(digest_of(data)) == data
