"""Run `image-registry serve` as a subprocess for end-to-end tests.

Each `RegistryProcess` owns a temporary data dir and a free port, waits for `/healthz`,
and exposes what clients need: the URL, the CA bundle, the admin kubeconfig and token.
It is stopped by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from tests.support.postgres import free_port

BIN = Path(sys.executable).parent


def refused_serve(
    data_dir: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`image-registry serve --data-dir DATA_DIR --listen <free loopback port> ARGS` run to
    its exit, for settings it must refuse before serving (a server that starts instead
    fails the test at `timeout`). `env` replaces the environment (default: this one's)."""
    argv = [str(BIN / "image-registry"), "serve", "--data-dir", str(data_dir)]
    argv += ["--listen", f"127.0.0.1:{free_port()}", *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=dict(env or os.environ)
    )


@dataclass
class RegistryProcess:
    data_dir: Path
    plain_http: bool = False
    database: str | None = None
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'http' if self.plain_http else 'https'}://{self.host}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "tls" / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "admin.kubeconfig"

    @property
    def log_path(self) -> Path:
        """Where the server's output goes (appended to across restarts on one port)."""
        return self.data_dir.parent / f"server-{self.port}.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def admin_token(self) -> str:
        config = yaml.safe_load(self.kubeconfig.read_text())
        return str(config["users"][0]["user"]["token"])

    def cert_dir(self, root: Path) -> Path:
        """A directory holding only this server's CA as `ca.crt`, for skopeo's
        `--cert-dir`/`--dest-cert-dir` (it reads `*.key` there as client keys, so the
        server's own `tls/` directory cannot be used)."""
        directory = root / f"certs-{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.crt").write_bytes(self.ca_file.read_bytes())
        return directory

    def client(self, token: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify: object = (
            False if self.plain_http else ssl.create_default_context(cafile=self.ca_file)
        )
        return httpx.Client(base_url=self.url, headers=headers, verify=verify, **kwargs)  # type: ignore[arg-type]

    def worker_pids(self) -> list[int]:
        """The Granian worker processes (children of the server process)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in children.split()]

    def start(self, timeout: float = 30.0) -> RegistryProcess:
        """Start the server and wait until it is healthy. A port another test's process took
        between `free_port` and the server's bind (tests run in parallel) is replaced by a
        new one, twice at most; any other early exit is an error."""
        for _ in range(3):
            if self._launch(timeout):
                return self
            self.port = free_port()
        raise RuntimeError(f"no free port found for the server (last tried {self.port})")

    def _launch(self, timeout: float) -> bool:
        """False: the server could not bind its port (taken meanwhile)."""
        args = [
            str(BIN / "image-registry"),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            self.host,
            *self.extra_args,
        ]
        if self.plain_http:
            args.append("--plain-http")
        if self.database:
            args += ["--database", self.database]
        log = open(self.log_path, "ab")  # noqa: SIM115
        written_before = log.tell()  # a restart on the same port appends to the same log
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            # Granian forks workers; a session of our own lets stop/kill reach them all.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log.close()
                if b"Address already in use" in Path(log.name).read_bytes()[written_before:]:
                    self.proc = None
                    return False
                raise RuntimeError(f"server exited early: see {log.name}")
            try:
                with self.client(timeout=1.0) as client:
                    if client.get("/healthz").status_code == 200:
                        return True
            except (httpx.HTTPError, OSError):
                # OSError: the CA file is written by the server on first start.
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become healthy")

    def __enter__(self) -> RegistryProcess:
        return self if self.proc is not None else self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            self._kill_group()  # orphaned workers of a crashed main process
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        self._kill_group()

    def kill(self) -> None:
        """SIGKILL the server and its workers (a crash, as far as the data dir can tell)."""
        if self.proc is None:
            return
        self._kill_group()
        self.proc.wait()

    def _kill_group(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
