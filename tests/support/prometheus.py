"""Debian's `prometheus` server on loopback, scraping a test registry.

Each `PrometheusProcess` has its own data dir and a free port; its scrape configuration
is written from the `jobs` given (target, scheme, CA file, bearer token file), scraping
every second. `query` asks its HTTP API (`/api/v1/query`) and `wait_for` polls a query
until a condition holds, so tests assert outcomes rather than sleeping.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.postgres import free_port

BINARY = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    target: str  # host:port
    scheme: str = "https"
    ca_file: Path | None = None
    token_file: Path | None = None

    def config(self) -> dict[str, Any]:
        job: dict[str, Any] = {
            "job_name": self.name,
            "scheme": self.scheme,
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "static_configs": [{"targets": [self.target]}],
        }
        if self.ca_file is not None:
            job["tls_config"] = {"ca_file": str(self.ca_file)}
        if self.token_file is not None:
            job["authorization"] = {"type": "Bearer", "credentials_file": str(self.token_file)}
        return job


@dataclass
class PrometheusProcess:
    root: Path
    jobs: list[ScrapeJob]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> PrometheusProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [job.config() for job in self.jobs],
                }
            )
        )
        log = open(self.root / "prometheus.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited early: see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("prometheus did not become ready")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> PrometheusProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10.0)
        reply.raise_for_status()
        body = reply.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        """The value of a query that yields one sample (None when it yields none)."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def settled(self, expr: str, quiet: float = 3.0, timeout: float = 90.0) -> float | None:
        """`expr` once it has kept one value for `quiet` seconds: longer than a worker takes
        to flush its counters (1 s) plus a scrape (1 s), so requests already answered are
        all in it."""
        deadline = time.monotonic() + timeout
        value, since = self.scalar(expr), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.scalar(expr)
            if now != value:
                value, since = now, time.monotonic()
        return value

    def wait_for(
        self, expr: str, done: Callable[[float | None], bool], timeout: float = 90.0
    ) -> float | None:
        """Poll `expr` until `done(value)`; the last value either way (the caller asserts)."""
        deadline = time.monotonic() + timeout
        value = self.scalar(expr)
        while not done(value) and time.monotonic() < deadline:
            time.sleep(0.5)
            value = self.scalar(expr)
        return value
