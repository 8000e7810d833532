"""Every metric family of the server, and how they survive Granian's worker processes.

Granian runs the app in several worker processes, so a counter kept in one worker's memory
would answer a scrape with that worker's share only. `prometheus_client`'s multiprocess
mode keeps each worker's values in memory-mapped files in one directory (its
`PROMETHEUS_MULTIPROC_DIR`); a scrape, whichever worker answers it, adds the counters and
histograms of every file up. `serve` empties the directory (`DATA_DIR/run/metrics`) before
the workers start and, when Granian replaces a worker, calls `mark_process_dead` so the
live gauges (uploads in progress, pool connections in use) of the dead worker stop counting.
The library chooses its mode when the first metric is built, from the environment, which
is why the supervisor exports the directory before it spawns any worker.

Labels stay low-cardinality by construction: a route template (`observability.routes`),
never a repository name, tag or digest; an operation name; an outcome word.

The request counters are touched on every request, and in multiprocess mode every
increment is a locked write to a memory-mapped file (1-4 us each, measured): at that
price the series of a manifest GET cost a third more server CPU. So the hot series (the
request families, authentication outcomes, database statement time) are counted in
plain process-local numbers (`BufferedCounter`, `BufferedHistogram`, bound once per label
set) and written to the shared files by `flush`, which the server runs every second and
before answering a scrape; a scrape therefore sees other workers' counts at most a
second late.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from imageregistry.observability.multiproc import MULTIPROC_ENV

if TYPE_CHECKING:
    from imageregistry.prune.gc import GcResult

# The classic text format every Prometheus since 2.0 reads (the library's newest is 1.0.0).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
PREFIX = "imageregistry"

# Seconds; from a cached manifest GET (sub-millisecond) to a multi-GiB upload.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
QUERY_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)
RUN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)


FLUSH_SECONDS = 1.0


class BufferedCounter:
    """A counter child's increments, kept here until `flush` (hot path: one `+=`)."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.pending += amount

    def flush(self) -> None:
        pending, self.pending = self.pending, 0.0
        if pending:
            self.child.inc(pending)


class BufferedHistogram:
    """A histogram child's observations, bucketed here (`bisect`) until `flush` adds each
    bucket's count at once. `prometheus_client` has no public call to add n observations,
    so `flush` uses the child's bucket and sum values (`tests/unit/observability` checks
    the result equals `observe`'s). With `lock`, safe to observe from threads."""

    __slots__ = ("bounds", "child", "counts", "lock", "total")

    def __init__(self, child: Any, bounds: tuple[float, ...], lock: bool = False) -> None:
        self.child = child
        self.bounds = (*bounds, float("inf"))
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.lock = threading.Lock() if lock else None

    def observe(self, amount: float) -> None:
        if self.lock is None:
            self.counts[bisect_left(self.bounds, amount)] += 1
            self.total += amount
            return
        with self.lock:
            self.counts[bisect_left(self.bounds, amount)] += 1
            self.total += amount

    def flush(self) -> None:
        if self.lock is not None:
            with self.lock:
                counts, total = self.counts, self.total
                self.counts, self.total = [0] * len(self.bounds), 0.0
        else:
            counts, total = self.counts, self.total
            self.counts, self.total = [0] * len(self.bounds), 0.0
        if not any(counts):
            return
        for value, count in zip(self.child._buckets, counts, strict=True):
            if count:
                value.inc(count)
        self.child._sum.inc(total)


class RequestChildren:
    """The pre-bound series one (surface, route, method, code) request updates."""

    __slots__ = ("count", "duration", "received", "sent")

    def __init__(
        self,
        count: BufferedCounter,
        duration: BufferedHistogram,
        received: BufferedCounter,
        sent: BufferedCounter,
    ) -> None:
        self.count = count
        self.duration = duration
        self.received = received
        self.sent = sent

    def record(self, seconds: float, sent: int, received: int) -> None:
        """One answered request, in one call (the request series are only ever updated
        from the event loop, so the duration's histogram takes no lock)."""
        self.count.pending += 1
        duration = self.duration
        duration.counts[bisect_left(duration.bounds, seconds)] += 1
        duration.total += seconds
        if sent:
            self.sent.pending += sent
        if received:
            self.received.pending += received


class Metrics:
    """The server's metric families. One per worker process (built by `server.build_app`);
    in multiprocess mode the values live in the shared directory, so `render` sees every
    worker's."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        # Metrics are registered here; in multiprocess mode `render` reads the files instead.
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        p = PREFIX
        self.requests = Counter(
            f"{p}_http_requests",
            "HTTP requests answered, by surface, route template, method and status code.",
            ["surface", "route", "method", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            f"{p}_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response.",
            ["surface", "route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.received_bytes = Counter(
            f"{p}_http_request_body_bytes",
            "Request body bytes received.",
            ["surface", "route"],
            registry=r,
        )
        self.sent_bytes = Counter(
            f"{p}_http_response_body_bytes",
            "Response body bytes sent (a file the HTTP server sends itself: its Content-Length).",
            ["surface", "route"],
            registry=r,
        )
        self.uploads_in_progress = Gauge(
            f"{p}_uploads_in_progress",
            "Blob upload requests (POST, PATCH, PUT of an upload) being received now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.blob_redirects = Counter(
            f"{p}_blob_redirects",
            "Blob GETs answered with a redirect (to the blob port or object storage).",
            registry=r,
        )
        self.authentications = Counter(
            f"{p}_authentication_attempts",
            "Credentials presented, by result (success, failure, error).",
            ["result"],
            registry=r,
        )
        self.authorizations = Counter(
            f"{p}_authorization_decisions",
            "Authorization decisions, by decision (allowed, denied, error).",
            ["decision"],
            registry=r,
        )
        self.storage_operations = Counter(
            f"{p}_storage_operations",
            "Blob storage driver calls, by operation.",
            ["operation"],
            registry=r,
        )
        self.storage_errors = Counter(
            f"{p}_storage_errors",
            "Blob storage driver calls that raised, by operation.",
            ["operation"],
            registry=r,
        )
        self.storage_duration = Histogram(
            f"{p}_storage_operation_duration_seconds",
            "Blob storage driver call time, by operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.db_query_duration = Histogram(
            f"{p}_db_query_duration_seconds",
            "Database statement execution time.",
            buckets=QUERY_BUCKETS,
            registry=r,
        )
        self.db_connections_in_use = Gauge(
            f"{p}_db_pool_connections_in_use",
            "Database connections checked out of the pools now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.db_pool_size = Gauge(
            f"{p}_db_pool_size",
            "Database connections the pools may hold without overflow.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.gc_runs = Counter(
            f"{p}_gc_runs",
            "Confirmed registry GC runs, by result (success, failure).",
            ["result"],
            registry=r,
        )
        self.gc_duration = Histogram(
            f"{p}_gc_duration_seconds",
            "Duration of confirmed registry GC runs.",
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.gc_blobs_deleted = Counter(
            f"{p}_gc_blobs_deleted", "Blobs deleted by registry GC.", registry=r
        )
        self.gc_bytes_reclaimed = Counter(
            f"{p}_gc_bytes_reclaimed", "Bytes freed by registry GC.", registry=r
        )
        self.gc_held_bytes = Gauge(
            f"{p}_gc_grace_held_bytes",
            "Bytes of unreferenced blobs the last GC run kept for the grace period.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.prune_runs = Counter(
            f"{p}_prune_runs",
            "Confirmed image prune runs, by result (success, failure).",
            ["result"],
            registry=r,
        )
        self.prune_duration = Histogram(
            f"{p}_prune_duration_seconds",
            "Duration of confirmed image prune runs.",
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.prune_images_deleted = Counter(
            f"{p}_prune_images_deleted", "Images deleted by image pruning.", registry=r
        )
        self.scheduled_prune_last_success = Gauge(
            f"{p}_scheduled_prune_last_success_timestamp_seconds",
            "When the ImagePruner's scheduled run last succeeded (Unix time; 0: never).",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.scheduled_prune_failures = Gauge(
            f"{p}_scheduled_prune_consecutive_failures",
            "Scheduled prune runs that failed since the last one that succeeded.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.images = Gauge(
            f"{p}_images",
            "Images (manifests) stored, from the database.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.streams = Gauge(
            f"{p}_image_streams",
            "Image streams (repositories), from the database.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.blob_bytes = Gauge(
            f"{p}_blob_bytes",
            "Bytes of the blobs stored, from the database.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.certificate_expiry = Gauge(
            f"{p}_serving_certificate_expiry_timestamp_seconds",
            "When the main port's TLS serving certificate expires (Unix time).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.notifications_sent = Counter(
            f"{p}_notifications_sent",
            "Event notifications an endpoint accepted, by endpoint name.",
            ["endpoint"],
            registry=r,
        )
        self.notifications_failed = Counter(
            f"{p}_notifications_failed",
            "Event notification deliveries that failed (retried later), by endpoint name.",
            ["endpoint"],
            registry=r,
        )
        self.notifications_pending = Gauge(
            f"{p}_notifications_pending",
            "Event notifications waiting in the outbox, by endpoint name.",
            ["endpoint"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self._children: dict[tuple[str, str, str, int], RequestChildren] = {}
        self._buffered: list[BufferedCounter | BufferedHistogram] = []
        self.db_query = self._histogram(self.db_query_duration, QUERY_BUCKETS, lock=True)
        self.authenticated = {
            result: self._counter(self.authentications.labels(result))
            for result in ("success", "failure", "error")
        }
        self.pool_in_use: Any = None  # a callable reporting checked-out connections

    def _counter(self, child: Any) -> BufferedCounter:
        counter = BufferedCounter(child)
        self._buffered.append(counter)
        return counter

    def _histogram(
        self, child: Any, bounds: tuple[float, ...], lock: bool = False
    ) -> BufferedHistogram:
        histogram = BufferedHistogram(child, bounds, lock)
        self._buffered.append(histogram)
        return histogram

    def flush(self) -> None:
        """Write this process's buffered counts to the shared values."""
        for buffered in list(self._buffered):
            buffered.flush()
        if self.pool_in_use is not None:
            self.db_connections_in_use.set(self.pool_in_use())

    # --- the request pipeline's hook --------------------------------------------------

    def record_request(
        self,
        surface: str,
        route: str,
        method: str,
        code: int,
        seconds: float,
        sent: int,
        received: int,
    ) -> None:
        """One answered request (the request pipeline's hook, in one call)."""
        children = self._children.get((surface, route, method, code))
        if children is None:
            children = self.request_children(surface, route, method, code)
        children.record(seconds, sent, received)

    def request_children(self, surface: str, route: str, method: str, code: int) -> RequestChildren:
        key = (surface, route, method, code)
        children = self._children.get(key)
        if children is None:
            children = RequestChildren(
                self._counter(self.requests.labels(surface, route, method, str(code))),
                self._histogram(
                    self.request_duration.labels(surface, route, method), LATENCY_BUCKETS
                ),
                self._counter(self.received_bytes.labels(surface, route)),
                self._counter(self.sent_bytes.labels(surface, route)),
            )
            self._children[key] = children
        return children

    # --- prune and GC (prune.service.RunObserver) --------------------------------------

    def gc_finished(self, result: GcResult | None, seconds: float) -> None:
        """A confirmed GC run ended; `result` None means it raised."""
        self.gc_duration.observe(seconds)
        if result is None or result.failed:
            self.gc_runs.labels("failure").inc()
        else:
            self.gc_runs.labels("success").inc()
        if result is not None:
            self.gc_blobs_deleted.inc(len(result.blobs))
            self.gc_bytes_reclaimed.inc(result.size)
            self.gc_held_bytes.set(result.held.size)

    def prune_finished(self, images: int, failed: bool, seconds: float) -> None:
        self.prune_duration.observe(seconds)
        self.prune_runs.labels("failure" if failed else "success").inc()
        self.prune_images_deleted.inc(images)

    # --- exposition --------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition of every worker's values (or this process's alone outside
        multiprocess mode); this worker's buffered counts are written first."""
        self.flush()
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, self.multiprocess_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def from_environment() -> Metrics:
    """The worker's `Metrics`, in multiprocess mode when `serve` exported the directory."""
    return Metrics(os.environ.get(MULTIPROC_ENV) or None)
