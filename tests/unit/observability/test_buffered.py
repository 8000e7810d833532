"""The buffered series write exactly what direct `inc`/`observe` calls would."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from imageregistry.observability.metrics import LATENCY_BUCKETS, BufferedHistogram, Metrics


def samples(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_a_flushed_histogram_equals_observing_each_value() -> None:
    values = [0.0001, 0.0005, 0.0005, 0.003, 0.7, 12.0, 400.0, 0.0, 2.5]
    direct_registry, buffered_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=direct_registry)
    buffered = BufferedHistogram(
        Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=buffered_registry),
        LATENCY_BUCKETS,
        lock=True,
    )
    for value in values:
        direct.observe(value)
        buffered.observe(value)
    assert samples(buffered_registry) != samples(direct_registry)
    buffered.flush()
    buffered.flush()  # nothing pending: no change
    assert samples(buffered_registry) == samples(direct_registry)


def test_counts_from_threads_are_not_lost_and_a_scrape_flushes() -> None:
    metrics = Metrics()

    def work() -> None:
        for _ in range(5000):
            metrics.db_query.observe(0.001)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    children = metrics.request_children("oci", "/v2/", "GET", 200)
    children.count.inc()
    text = metrics.render().decode()
    assert "imageregistry_db_query_duration_seconds_count 20000.0" in text
    assert 'imageregistry_http_requests_total{code="200",method="GET",route="/v2/"' in text
