"""Metrics that need a collaborator of the server: decorators around the authorizer and
the blob store, listeners on the database engine, and the periodic database totals.

Each is attached once in `server.py`; the code they measure does not know about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine

from imageregistry.auth.authn import Authenticator, Unauthenticated
from imageregistry.auth.authorizer import Authorizer, Verdict
from imageregistry.auth.cluster.authenticator import TokenReviewAuthenticator
from imageregistry.auth.identity import Attributes, UserInfo
from imageregistry.auth.rbac_store import ObjectsRbacStore, RbacAuthorizer
from imageregistry.auth.resolver import Decision
from imageregistry.content.digest import Digest
from imageregistry.metadata.db import Database
from imageregistry.metadata.totals import read_totals
from imageregistry.observability.metrics import Metrics
from imageregistry.prune.scheduler import scheduled_prune_health
from imageregistry.storage.driver import (
    BlobInfo,
    BlobStore,
    PendingWrite,
    RelayMethod,
    RelaySource,
    StoredBlob,
    StoredUpload,
)
from imageregistry.storage.errors import StorageError, StorageFull

log = logging.getLogger(__name__)
T = TypeVar("T")
TOTALS_INTERVAL = 60.0  # seconds between two reads of the database totals, per worker


class CountingAuthorizer(RbacAuthorizer):
    """The server's RBAC authorizer, counting its decisions (allowed, denied, error).

    A subclass rather than a wrapper: the manifest pull (`oci.pull`) recognises the RBAC
    authorizer to decide at the RBAC version its own statement read (`decide_at`); of
    those decisions only refusals are counted here, the allowed ones (the cheapest
    requests the server answers) only by their status code.
    """

    def __init__(self, store: ObjectsRbacStore, metrics: Metrics) -> None:
        super().__init__(store)
        self._allowed = metrics.authorizations.labels("allowed")
        self._denied = metrics.authorizations.labels("denied")
        self._error = metrics.authorizations.labels("error")

    def authorize(self, attrs: Attributes) -> Verdict:
        try:
            verdict = super().authorize(attrs)
        except Exception:
            self._error.inc()
            raise
        (self._allowed if verdict.allowed else self._denied).inc()
        return verdict

    def decide_at(self, attrs: Attributes, version: tuple[int, ...]) -> Decision:
        try:
            decision = super().decide_at(attrs, version)
        except Exception:
            self._error.inc()
            raise
        if not decision.allowed:
            self._denied.inc()
        return decision


class CountingAuthenticator(Authenticator):
    """The server's authenticator, counting presented credentials by result: `success`,
    `failure` (wrong, expired or throttled) or `error` (the check itself failed). Requests
    without credentials are anonymous and not counted."""

    def __init__(self, metrics: Metrics, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._success = metrics.authenticated["success"]
        self._failure = metrics.authenticated["failure"]
        self._error = metrics.authenticated["error"]

    def authenticate(self, authorization: str | None, *, source: str | None = None) -> UserInfo:
        if not authorization:
            return super().authenticate(authorization, source=source)
        try:
            user = super().authenticate(authorization, source=source)
        except Unauthenticated:
            self._failure.inc()
            raise
        except Exception:
            self._error.inc()
            raise
        self._success.inc()
        return user


class CountingTokenReviewAuthenticator(CountingAuthenticator, TokenReviewAuthenticator):
    """Cluster mode's authenticator, counted like the local one: a cluster that gives no
    answer (`ClusterUnavailable`) counts as `error`."""


class CountingDecisions:
    """Any other authorizer (cluster mode's SubjectAccessReview), counting its decisions
    like `CountingAuthorizer`; a decision the cluster could not make counts as `error`."""

    def __init__(self, inner: Authorizer, metrics: Metrics) -> None:
        self._inner = inner
        self._allowed = metrics.authorizations.labels("allowed")
        self._denied = metrics.authorizations.labels("denied")
        self._error = metrics.authorizations.labels("error")

    def authorize(self, attrs: Attributes) -> Verdict:
        try:
            verdict = self._inner.authorize(attrs)
        except Exception:
            self._error.inc()
            raise
        (self._allowed if verdict.allowed else self._denied).inc()
        return verdict


class InstrumentedBlobStore:
    """A blob store that counts and times every driver call by operation.

    Exceptions that answer a client's mistake (unknown blob, digest mismatch, offset
    mismatch, ...) are outcomes, not storage errors; a full store and anything the driver
    did not expect (I/O errors, object-storage failures) count as errors."""

    def __init__(self, inner: BlobStore, metrics: Metrics) -> None:
        self.relays = inner.relays
        self._inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:  # driver-specific extras (paths, clients)
        return getattr(self._inner, name)

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        except StorageError as exc:
            if isinstance(exc, StorageFull):
                self._metrics.storage_errors.labels(operation).inc()
            raise
        except Exception:
            self._metrics.storage_errors.labels(operation).inc()
            raise
        finally:
            self._metrics.storage_operations.labels(operation).inc()
            self._metrics.storage_duration.labels(operation).observe(time.perf_counter() - started)

    async def start_upload(self, upload_id: str) -> None:
        await self._timed("start_upload", self._inner.start_upload(upload_id))

    async def append_upload(
        self,
        upload_id: str,
        offset: int,
        chunks: AsyncIterator[bytes],
        limit: int | None = None,
        *,
        final: Digest | None = None,
    ) -> int:
        return await self._timed(
            "append_upload",
            self._inner.append_upload(upload_id, offset, chunks, limit, final=final),
        )

    async def upload_size(self, upload_id: str) -> int:
        return await self._timed("upload_size", self._inner.upload_size(upload_id))

    async def commit_upload(
        self,
        upload_id: str,
        expected: Digest,
        expected_size: int | None = None,
        *,
        replace: bool = False,
    ) -> BlobInfo:
        return await self._timed(
            "commit_upload",
            self._inner.commit_upload(upload_id, expected, expected_size, replace=replace),
        )

    async def cancel_upload(self, upload_id: str) -> None:
        await self._timed("cancel_upload", self._inner.cancel_upload(upload_id))

    async def put_blob(self, data: bytes, expected: Digest, *, replace: bool = False) -> BlobInfo:
        return await self._timed("put_blob", self._inner.put_blob(data, expected, replace=replace))

    async def hash_blob(self, digest: Digest) -> BlobInfo:
        return await self._timed("hash_blob", self._inner.hash_blob(digest))

    async def stat(self, digest: Digest) -> int | None:
        return await self._timed("stat", self._inner.stat(digest))

    def local_path(self, digest: Digest) -> str | None:
        return self._inner.local_path(digest)

    async def redirect_url(self, digest: Digest) -> str | None:
        return await self._timed("redirect_url", self._inner.redirect_url(digest))

    async def relay_source(self, digest: Digest, method: RelayMethod = "GET") -> RelaySource | None:
        return await self._timed("relay_source", self._inner.relay_source(digest, method))

    async def read(
        self,
        digest: Digest,
        start: int = 0,
        end: int | None = None,
        *,
        expected_size: int | None = None,
    ) -> AsyncIterator[bytes]:
        reading = self._inner.read(digest, start, end, expected_size=expected_size)
        return await self._timed("read", reading)

    async def read_all(self, digest: Digest) -> bytes:
        return await self._timed("read_all", self._inner.read_all(digest))

    async def delete(self, digest: Digest) -> bool:
        return await self._timed("delete", self._inner.delete(digest))

    async def delete_many(self, digests: Sequence[Digest]) -> None:
        await self._timed("delete_many", self._inner.delete_many(digests))

    def iter_blobs(self) -> AsyncIterator[StoredBlob]:
        return self._inner.iter_blobs()

    def iter_uploads(self) -> AsyncIterator[StoredUpload]:
        return self._inner.iter_uploads()

    def iter_pending_writes(self) -> AsyncIterator[PendingWrite]:
        return self._inner.iter_pending_writes()

    async def abort_pending_write(self, write: PendingWrite) -> None:
        await self._timed("abort_pending_write", self._inner.abort_pending_write(write))


def instrument_engine(engine: Engine, metrics: Metrics) -> None:
    """Time every statement with SQLAlchemy's events; the connections in use are read
    from the pool at each flush (no work per checkout)."""
    duration = metrics.db_query
    started_key = "imageregistry.query_started"

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, _sql: Any, _params: Any, _ctx: Any, _many: Any) -> None:
        conn.info[started_key] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, _sql: Any, _params: Any, _ctx: Any, _many: Any) -> None:
        started = conn.info.pop(started_key, None)
        if started is not None:
            duration.observe(time.perf_counter() - started)

    size = getattr(engine.pool, "size", None)
    if callable(size):
        metrics.db_pool_size.set(size())
    checked_out = getattr(engine.pool, "checkedout", None)
    if callable(checked_out):
        metrics.pool_in_use = checked_out


@contextlib.asynccontextmanager
async def flushing(metrics: Metrics, interval: float) -> AsyncIterator[None]:
    """Write the buffered counts every `interval` seconds, and once more on the way out."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            metrics.flush()

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        metrics.flush()


def certificate_expiry(path: Path) -> float | None:
    """The serving certificate's notAfter as Unix time, or None if it cannot be read."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc.timestamp()


def publish_totals(metrics: Metrics, db: Database) -> None:
    """Read the database's totals and the scheduled pruner's status into the gauges."""
    totals = read_totals(db)
    metrics.images.set(totals.images)
    metrics.streams.set(totals.streams)
    metrics.blob_bytes.set(totals.blob_bytes)
    health = scheduled_prune_health(db)
    metrics.scheduled_prune_failures.set(health.consecutive_failures)
    last = health.last_success
    metrics.scheduled_prune_last_success.set(last.timestamp() if last is not None else 0)


@contextlib.asynccontextmanager
async def refreshing_totals(
    db: Database,
    metrics: Metrics,
    certificate: Path | None,
    interval: float = TOTALS_INTERVAL,
) -> AsyncIterator[None]:
    """Read the storage totals (and the certificate's expiry) at start and then every
    `interval` seconds, never per scrape: the counts scan tables, and a scrape every few
    seconds from several Prometheus servers must not turn into database load."""

    async def refresh() -> None:
        if certificate is not None:
            expiry = await asyncio.to_thread(certificate_expiry, certificate)
            if expiry is not None:
                metrics.certificate_expiry.set(expiry)
        try:
            await asyncio.to_thread(publish_totals, metrics, db)
        except Exception as exc:  # the database is down: keep the last figures
            log.warning("metrics: cannot read the storage totals: %s", exc)

    async def loop() -> None:
        while True:
            await refresh()
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
