"""S3 servers on loopback for tests: OpenStack Swift with its s3api middleware, and moto.

Swift is a production object store; its ``s3api`` middleware speaks the S3 protocol, so
tests against it exercise a real implementation. ``moto`` in server mode is an *emulator*
of AWS S3 (PyPI ``moto[server]``), fast to start and useful as a second target; passing
against it alone proves little about a real store, which is why both run.

Both are started on free loopback ports and stopped by the PID this module started.
Swift runs under the system ``/usr/bin/python3`` (its modules live in Debian's
dist-packages, not in the venv); the packages come from ``scripts/test``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from imageregistry.storage.s3config import S3Settings
from tests.support.postgres import free_port

SWIFT_ACCESS_KEY = "test:tester"
SWIFT_SECRET_KEY = "testing"
MOTO_ACCESS_KEY = "testing"
MOTO_SECRET_KEY = "testing"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """Where an S3 server listens and how to sign requests to it."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    region: str = REGION

    def settings(
        self, bucket: str, prefix: str, *, endpoint: str | None = None, **extra: Any
    ) -> S3Settings:
        """The driver's settings for ``bucket``/``prefix`` on this server (or reached through
        ``endpoint``, a proxy in front of it), plus any other ``storage_s3`` fields."""
        return S3Settings(
            bucket=bucket,
            prefix=prefix,
            endpoint=endpoint or self.endpoint,
            region=self.region,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            **extra,
        )

    def client(self) -> Any:
        """A boto3 S3 client for this server, to look into or tamper with a bucket."""
        return boto3_client(self.endpoint, self.region, self.access_key, self.secret_key)

    def env(self) -> dict[str, str]:
        """The standard AWS variables a client (our server, a bench) reads."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


def boto3_client(endpoint: str, region: str, access_key: str, secret_key: str) -> Any:
    import boto3  # type: ignore[import-untyped]  # from moto[server]; tests only

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )


def _wait_ready(url: str, procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                text = "\n".join(p.read_text(errors="replace")[-3000:] for p in logs)
                raise RuntimeError(f"S3 server exited with {proc.returncode}:\n{text}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"S3 server at {url} not ready after 90 s")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def moto_server() -> Iterator[S3Server]:
    """moto's S3 emulator (``moto_server``) on a free loopback port."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
    moto = Path(sys.executable).parent / "moto_server"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/moto-api/", [proc], [log])
        yield S3Server("moto", f"http://127.0.0.1:{port}", MOTO_ACCESS_KEY, MOTO_SECRET_KEY)
    finally:
        _stop([proc])
        log.unlink(missing_ok=True)


_PIPELINE = (
    "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl "
    "ratelimit s3api tempauth copy slo dlo versioned_writes proxy-logging proxy-server"
)

_EGG = {"cache": "memcache"}

_RINGS = """
import sys
from swift.common.ring import RingBuilder
root = sys.argv[1]
for name, port in zip(("account", "container", "object"), sys.argv[2:5]):
    builder = RingBuilder(6, 1, 1)
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
                     "device": "d1", "weight": 100})
    builder.rebalance()
    builder.get_ring().save(f"{root}/{name}.ring.gz")
"""


def _swift_conf(root: Path, kind: str, port: int, user: str) -> str:
    common = (
        f"[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {port}\nworkers = 0\n"
        f"user = {user}\nswift_dir = {root}\ndevices = {root}/srv\nmount_check = false\n"
        "log_level = INFO\n\n"
    )
    if kind == "proxy":
        return common + (
            f"[pipeline:main]\npipeline = {_PIPELINE}\n\n"
            "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\n"
            "[filter:tempauth]\nuse = egg:swift#tempauth\n"
            "user_test_tester = testing .admin\n\n"
            "[filter:s3api]\nuse = egg:swift#s3api\nlocation = us-east-1\n\n"
            + "".join(
                f"[filter:{name}]\nuse = egg:swift#{_EGG.get(name, name.replace('-', '_'))}\n\n"
                for name in [
                    "catch_errors",
                    "gatekeeper",
                    "healthcheck",
                    "proxy-logging",
                    "cache",
                    "listing_formats",
                    "bulk",
                    "tempurl",
                    "ratelimit",
                    "copy",
                    "slo",
                    "dlo",
                    "versioned_writes",
                ]
            )
        )
    return common + (
        f"[pipeline:main]\npipeline = {kind}-server\n\n"
        f"[app:{kind}-server]\nuse = egg:swift#{kind}\n\n"
        f"[{kind}-replicator]\n\n[{kind}-updater]\n\n[{kind}-auditor]\n"
    )


def swift_available() -> bool:
    return shutil.which("swift-proxy-server") is not None and Path("/etc/swift").is_dir()


def _listening_pid_ok(pid: int, port: int) -> bool:
    """True when `pid` itself holds the listening socket on 127.0.0.1:`port`.

    A free port is only free when it was asked for: two Swift clusters started at once by
    parallel test workers can be handed the same number, and the one that loses the bind
    exits while its health check is answered by the other cluster's server."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
            return True
    return False


@contextmanager
def swift_server() -> Iterator[S3Server]:
    """A one-replica Swift cluster (proxy with s3api + account/container/object servers),
    started again on other ports when another process turns out to hold one of its ports."""
    for attempt in range(3):
        with _swift_cluster() as (server, procs, ports):
            if all(
                _listening_pid_ok(proc.pid, ports[kind])
                for proc, kind in zip(procs, SWIFT_KINDS, strict=True)
            ):
                yield server
                return
        if attempt == 2:
            raise RuntimeError("Swift could not get ports of its own after 3 attempts")


SWIFT_KINDS = ("account", "container", "object", "proxy")


@contextmanager
def _swift_cluster() -> Iterator[tuple[S3Server, list[subprocess.Popen[bytes]], dict[str, int]]]:
    if not swift_available():
        raise RuntimeError("Swift is not installed: run scripts/test (apt swift-proxy ...)")
    import pwd

    user = pwd.getpwuid(os.geteuid()).pw_name
    root = Path(tempfile.mkdtemp(prefix="swift-"))
    (root / "srv" / "d1").mkdir(parents=True)
    ports = {kind: free_port() for kind in SWIFT_KINDS}
    subprocess.run(
        ["/usr/bin/python3", "-c", _RINGS, str(root)]
        + [str(ports[k]) for k in ("account", "container", "object")],
        check=True,
        capture_output=True,
    )
    (root / "swift.conf").write_text(
        "[swift-hash]\nswift_hash_path_suffix = test\nswift_hash_path_prefix = test\n"
        "[storage-policy:0]\nname = gold\ndefault = yes\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for kind in SWIFT_KINDS:
            conf = root / f"{kind}-server.conf"
            conf.write_text(_swift_conf(root, kind, ports[kind], user))
            log = root / f"{kind}.log"
            logs.append(log)
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        ["/usr/bin/python3", f"/usr/bin/swift-{kind}-server", str(conf), "-v"],
                        stdout=out,
                        stderr=out,
                    )
                )
        endpoint = f"http://127.0.0.1:{ports['proxy']}"
        _wait_ready(f"{endpoint}/healthcheck", procs, logs)
        for kind in ("account", "container", "object"):
            _wait_ready(f"http://127.0.0.1:{ports[kind]}/healthcheck", procs, logs)
        yield S3Server("swift", endpoint, SWIFT_ACCESS_KEY, SWIFT_SECRET_KEY), procs, ports
    finally:
        _stop(procs)
        shutil.rmtree(root, ignore_errors=True)


def create_bucket(server: S3Server, bucket: str) -> None:
    """Create ``bucket`` with a SigV4-signed PUT (the driver never creates buckets unasked)."""
    import asyncio

    from imageregistry.storage.s3 import create_bucket_async
    from imageregistry.storage.s3config import S3Settings

    settings = S3Settings(
        bucket=bucket,
        endpoint=server.endpoint,
        region=server.region,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
    )
    asyncio.run(create_bucket_async(settings))
