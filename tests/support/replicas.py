"""Two `image-registry serve` replicas over one PostgreSQL database and one S3 bucket.

The deployment shape of docs/operations.md, "Several replicas": each replica has a data
dir of its own and nothing is copied between them; both are started with the same
`--database postgresql://...` and `--storage s3://BUCKET/PREFIX`. Replica A starts first
and initializes the shared state (schema, keys, CA, admin identity); B adopts it.

Modules start one pair (module-scoped fixture) and share it between their tests; a test
may `kill()` one replica (SIGKILL of the whole process group) and `start()` it again on
the same port and data dir. Ports come from `free_port`, databases are created per pair
under a name of the caller's choosing, and every S3 server is this module's own, so
parallel test workers never meet.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.postgres import create_database
from tests.support.s3servers import S3Server, create_bucket, moto_server, swift_server
from tests.support.server import RegistryProcess

# moto (an emulator, PyPI) runs everywhere; Swift's s3api is a real S3 implementation
# from Debian (scripts/test installs it).
S3_KINDS = ("moto", "swift")
PART_SIZE = 5 << 20  # S3's smallest part: small pushes still span several parts


@contextmanager
def s3_server(kind: str) -> Iterator[S3Server]:
    """An S3 server of `kind` ("moto" or "swift") on loopback, stopped afterwards."""
    if kind == "moto":
        with moto_server() as server:
            yield server
    elif kind == "swift":
        with swift_server() as server:
            yield server
    else:
        raise ValueError(f"unknown S3 server kind {kind!r}")


@dataclass(frozen=True)
class Replicas:
    """A running pair; `a` initialized the shared state, `b` adopted it."""

    a: RegistryProcess
    b: RegistryProcess
    s3: S3Server
    database: str
    bucket: str
    prefix: str

    @property
    def storage(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def both(self) -> tuple[RegistryProcess, RegistryProcess]:
        return self.a, self.b

    def replica(
        self, data_dir: Path, *, plain_http: bool = False, env: dict[str, str] | None = None
    ) -> RegistryProcess:
        """Another (not yet started) replica of the same registry, e.g. a third one."""
        return _replica(
            data_dir, self.database, self.storage, self.s3, plain_http=plain_http, env=env
        )


def _replica(
    data_dir: Path,
    database: str,
    storage: str,
    s3: S3Server,
    *,
    plain_http: bool = False,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    s3_settings: dict[str, object] | None = None,
) -> RegistryProcess:
    block = {"part_size": PART_SIZE, **(s3_settings or {})}
    return RegistryProcess(
        data_dir=data_dir,
        plain_http=plain_http,
        database=database,
        extra_args=["--storage", storage, *(extra_args or [])],
        env={**s3.env(), "IMAGE_REGISTRY_STORAGE_S3": json.dumps(block), **(env or {})},
    )


@contextmanager
def two_replicas(
    root: Path,
    postgres_url: str,
    s3: S3Server,
    *,
    name: str,
    plain_http: bool = False,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    s3_settings: dict[str, object] | None = None,
    timeout: float = 120.0,
) -> Iterator[Replicas]:
    """Start replicas A then B (data dirs `root/a`, `root/b`) on a new database `name`
    of the PostgreSQL server at `postgres_url` and a new bucket `name` on `s3`.

    `env`, `extra_args` and `s3_settings` (the `storage_s3` block) apply to both."""
    database = create_database(postgres_url, name)
    bucket = name.lower().replace("_", "-")
    create_bucket(s3, bucket)
    storage = f"s3://{bucket}/registry"
    a, b = (
        _replica(
            root / label,
            database,
            storage,
            s3,
            plain_http=plain_http,
            env=env,
            extra_args=extra_args,
            s3_settings=s3_settings,
        )
        for label in ("a", "b")
    )
    # One after the other: A initializes, B adopts (a start that races is covered by the
    # preparation lock, not what this fixture is for).
    a.start(timeout=timeout)
    try:
        b.start(timeout=timeout)
        try:
            yield Replicas(a, b, s3, database, bucket, "registry")
        finally:
            b.stop()
    finally:
        a.stop()
