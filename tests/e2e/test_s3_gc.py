"""GC and reconcile on object storage, against OpenStack Swift's s3api (a real S3
implementation on loopback) and moto (an emulator), through a counting proxy
(tests/support/s3proxy.py) that forwards every request unchanged.

- The driver deletes a GC batch with ``DeleteObjects`` (1,000 keys per request, Swift
  refuses it without ``Content-MD5``) and lists the bucket page by page.
- A registry killed while its GC sweep waits for the bucket's answer to a batch delete
  loses nothing and leaks nothing: the next run finishes the batch, the referenced image
  still pulls byte for byte, and the reconciler finds no unknown object.
- A registry killed while a chunk streams leaves an unfinished multipart upload in the
  bucket; ``gc --reconcile`` reports it and ``gc --confirm`` aborts it once it is older
  than ``upload_max_age_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imageregistry.content.digest import Digest
from imageregistry.storage.s3 import S3BlobStore
from tests.e2e.ac_support import AC, ac
from tests.e2e.oci_support import OCI_MANIFEST, image_manifest, sha
from tests.support.s3proxy import (
    S3Proxy,
    is_create_multipart,
    is_delete_objects,
    is_list_objects,
)
from tests.support.s3servers import S3Server, create_bucket, moto_server, swift_server
from tests.support.server import RegistryProcess

MiB = 1 << 20


@pytest.fixture(scope="module", params=["moto", "swift"])
def s3(request: pytest.FixtureRequest) -> Iterator[S3Server]:
    with moto_server() if request.param == "moto" else swift_server() as server:
        yield server


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[S3Proxy]:
    with S3Proxy(s3.endpoint).running() as running:
        yield running


_buckets = iter(range(1_000_000))


def _bucket(s3: S3Server) -> str:
    name = f"gc-{os.getpid()}-{next(_buckets)}"
    create_bucket(s3, name)
    return name


def _keys(s3: S3Server, bucket: str, prefix: str) -> set[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def _multipart(s3: S3Server, bucket: str) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = (
        s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    )
    return uploads


def test_the_driver_deletes_in_batches_and_lists_page_by_page(s3: S3Server, proxy: S3Proxy) -> None:
    bucket = _bucket(s3)
    # Swift deletes a batch key by key: slow on a loaded machine
    settings = s3.settings(bucket, "r", endpoint=proxy.endpoint, timeout_seconds=600)
    count = 1100  # more than one page of ListObjectsV2 and of DeleteObjects
    blobs = [f"blob {i}\n".encode() for i in range(count)]
    digests = [Digest("sha256", hashlib.sha256(data).hexdigest()) for data in blobs]

    async def scenario() -> tuple[int, int]:
        store = S3BlobStore(settings)
        gate = asyncio.Semaphore(32)

        async def put(data: bytes, digest: Digest) -> None:
            async with gate:
                await store.put_blob(data, digest)

        await asyncio.gather(*(put(d, g) for d, g in zip(blobs, digests, strict=True)))
        pages = proxy.count(is_list_objects)
        listed = {blob.digest async for blob in store.iter_blobs()}
        assert listed == set(digests)
        assert proxy.count(is_list_objects) - pages == 2  # 1,000 keys, then 100
        absent = Digest("sha256", hashlib.sha256(b"never stored").hexdigest())
        before = len(proxy.requests)
        await store.delete_many([*digests, absent])
        deletes = proxy.requests[before:]
        left = [blob async for blob in store.iter_blobs()]
        return len(deletes), len(left)

    requests, left = asyncio.run(scenario())
    # 1,101 keys: exactly two DeleteObjects requests (1,000 + 101), no per-key DELETE.
    assert requests == 2
    assert proxy.count(is_delete_objects) == 2
    assert left == 0
    assert _keys(s3, bucket, "r/") == set()


def _server(root: Path, endpoint: str, s3: S3Server, bucket: str, **env: str) -> RegistryProcess:
    return RegistryProcess(
        data_dir=root / "data",
        plain_http=True,
        extra_args=["--storage", f"s3://{bucket}/reg"],
        env={
            **s3.env(),
            "AWS_ENDPOINT_URL": endpoint,
            "IMAGE_REGISTRY_STORAGE_S3": json.dumps(
                {"part_size": 5 * MiB, "redirect": False, "timeout_seconds": 600}
            ),
            "IMAGE_REGISTRY_GC_GRACE_SECONDS": "0",
            "IMAGE_REGISTRY_RECONCILE_GRACE_SECONDS": "0",
            **env,
        },
    )


def _login(server: RegistryProcess, home: Path) -> Path:
    ac(home, "login", server.url, "--token", server.admin_token)  # plain HTTP: no CA
    return home


def _gc_json(home: Path, *args: str) -> dict[str, Any]:
    result = ac(home, "adm", "registry", "gc", *args, "-o", "json")
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_a_gc_killed_mid_sweep_loses_and_leaks_nothing(
    s3: S3Server, proxy: S3Proxy, tmp_path: Path
) -> None:
    bucket = _bucket(s3)
    server = _server(tmp_path, proxy.endpoint, s3, bucket)
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = os.urandom(6 * MiB)  # a multipart upload of two parts
    manifest = image_manifest(config, [layer])
    orphans = [os.urandom(100 + i) for i in range(40)]
    with server.start(timeout=90), server.client(server.admin_token, timeout=120) as client:
        for data in [layer, *orphans]:
            answer = client.post(
                "/v2/team/app/blobs/uploads/", params={"digest": sha(data)}, content=data
            )
            assert answer.status_code == 201, answer.text
        # A session whose one chunk is smaller than a part stages it with one PutObject,
        # not a multipart upload (three requests): a push is that much shorter.
        multipart = proxy.count(is_create_multipart)  # the 6 MiB layer's PutObject is one
        location = client.post("/v2/team/app/blobs/uploads/").headers["location"]
        done = client.put(location, params={"digest": sha(config)}, content=config)
        assert done.status_code == 201, done.text
        assert proxy.count(is_create_multipart) == multipart
        put = client.put(
            "/v2/team/app/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        assert put.status_code == 201, put.text
        home = _login(server, tmp_path / "home")
        uploads_deletes = proxy.count(is_delete_objects)  # each commit drops its staging keys
        proxy.hold_response(is_delete_objects)
        env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "kubeconfig")}
        running = subprocess.Popen(
            [AC, "adm", "registry", "gc", "--confirm"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            # The bucket has deleted the batch; the registry has not heard back yet.
            assert proxy.held.wait(120), "GC never sent DeleteObjects"
            server.kill()
        finally:
            proxy.release()
            running.communicate(timeout=120)
    assert running.returncode != 0  # the command saw its server die
    orphan_keys = {f"reg/blobs/sha256/{sha(d)[7:9]}/{sha(d)[7:]}" for d in orphans}
    assert not orphan_keys & _keys(s3, bucket, "reg/blobs/")  # the store had acted

    with server.start(timeout=90), server.client(server.admin_token, timeout=120) as client:
        done = _gc_json(home, "--confirm")["status"]
        # The killed run's batch is finished: rows dropped, one more DeleteObjects for it.
        assert sorted(b["digest"] for b in done["blobs"]) == sorted(sha(d) for d in orphans)
        assert done["failed"] == []
        assert proxy.count(is_delete_objects) - uploads_deletes == 2
        assert not [t for m, t in proxy.requests if m == "DELETE" and "/blobs/" in t]
        for data in orphans:
            assert client.head(f"/v2/team/app/blobs/{sha(data)}").status_code == 404
        got = client.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200 and got.content == manifest
        for data in (config, layer):
            pulled = client.get(f"/v2/team/app/blobs/{sha(data)}")
            assert pulled.status_code == 200 and pulled.content == data
        again = _gc_json(home, "--reconcile")["status"]
        assert again["count"] == 0
        assert again["reconcile"]["unknown"] == []
        assert again["reconcile"]["multipartUploads"] == []
        assert again["reconcile"]["scanned"] == 2
    assert _keys(s3, bucket, "reg/blobs/") == {
        f"reg/blobs/sha256/{sha(d)[7:9]}/{sha(d)[7:]}" for d in (config, layer)
    }


def test_an_unfinished_multipart_upload_is_reported_and_aborted(
    s3: S3Server, tmp_path: Path
) -> None:
    bucket = _bucket(s3)
    server = _server(tmp_path, s3.endpoint, s3, bucket)
    release = threading.Event()

    def body() -> Iterator[bytes]:
        for _ in range(6):  # 6 MiB: the first 5 MiB part is uploaded before the wait
            yield os.urandom(MiB)
        release.wait(120)
        yield os.urandom(MiB)

    with server.start(timeout=90):
        with server.client(server.admin_token, timeout=120) as client:
            location = client.post("/v2/team/app/blobs/uploads/").headers["location"]

        def patch() -> None:
            with (
                server.client(server.admin_token, timeout=120) as streaming,
                contextlib.suppress(Exception),  # the server is killed under it
            ):
                streaming.patch(
                    location, content=body(), headers={"Content-Type": "application/octet-stream"}
                )

        sender = threading.Thread(target=patch, daemon=True)
        sender.start()
        deadline = time.monotonic() + 120
        while not _multipart(s3, bucket) and time.monotonic() < deadline:
            time.sleep(0.1)
        try:
            assert _multipart(s3, bucket), "the chunk never started a multipart upload"
            server.kill()  # mid-chunk: nobody is left to abort it
        finally:
            release.set()
            sender.join(120)
    [left] = _multipart(s3, bucket)
    assert left["Key"].startswith("reg/uploads/")

    later = _server(tmp_path, s3.endpoint, s3, bucket, IMAGE_REGISTRY_UPLOAD_MAX_AGE_SECONDS="1")
    with later.start(timeout=90):
        home = _login(later, tmp_path / "home")
        key = left["Key"].removeprefix("reg/")
        deadline = time.monotonic() + 60
        while True:  # older than upload_max_age_seconds (1 s) once a second has passed
            preview = _gc_json(home, "--reconcile")["status"]
            if preview["multipartUploads"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert [w["key"] for w in preview["multipartUploads"]] == [key]
        assert [w["key"] for w in preview["reconcile"]["multipartUploads"]] == [key]
        assert _multipart(s3, bucket)  # a dry run aborts nothing
        printed = ac(home, "adm", "registry", "gc", "--confirm").stdout
        assert f"Aborted unfinished multipart upload of {key}" in printed
        assert _multipart(s3, bucket) == []
        assert _gc_json(home, "--reconcile")["status"]["reconcile"]["multipartUploads"] == []

        # Objects written behind the registry's back (grace 0 here): reported, then deleted.
        strays = {}
        for data in (b"stray one", b"stray two"):
            hexdigest = hashlib.sha256(data).hexdigest()
            strays[f"sha256:{hexdigest}"] = f"reg/blobs/sha256/{hexdigest[:2]}/{hexdigest}"
            s3.client().put_object(Bucket=bucket, Key=strays[f"sha256:{hexdigest}"], Body=data)
        # Swift's s3api rounds LastModified up to the next whole second, and the reconciler
        # reports only objects modified before now - grace (grace 0 here): poll until the
        # strays' second has passed (a container listing updated late would show the same).
        deadline = time.monotonic() + 60
        while True:
            report = _gc_json(home, "--reconcile")["status"]["reconcile"]
            found = sorted(b["digest"] for b in report["unknown"])
            if found == sorted(strays) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert sorted(b["digest"] for b in report["unknown"]) == sorted(strays)
        assert set(strays.values()) <= _keys(s3, bucket, "reg/blobs/")
        _gc_json(home, "--reconcile", "--confirm")
        assert not set(strays.values()) & _keys(s3, bucket, "reg/blobs/")
