"""Health endpoints: `/livez` (the process answers), `/readyz` (it can serve), `/healthz`.

Kubernetes restarts a container whose liveness probe fails and takes a pod out of its
Service's endpoints while its readiness probe fails, so the two must mean different
things: a registry whose database is down must not be restarted in a loop (a restart
cannot fix the database) but must stop receiving traffic. `/readyz` therefore runs a real
query against the metadata database and a real (cheap) operation against the blob store,
each within `CHECK_TIMEOUT` seconds, and answers `503` naming what failed. It also answers
`503` from the moment the server is told to stop (`draining.py`), so the endpoints drop
the pod while in-flight requests still finish (`cli/server_main.py`). `/healthz` stays
the liveness answer it always was (tools and tests wait on it).

A check that hangs (an unreachable database host) cannot be cancelled in its thread, so at
most one check per dependency runs at a time: a probe arriving while the previous one is
still stuck answers `503` at once instead of piling up threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Route

from imageregistry.content.digest import Digest
from imageregistry.metadata.db import Database
from imageregistry.metadata.tokens import count_shared_settings
from imageregistry.storage.driver import BlobStore

CHECK_TIMEOUT = 2.0
# Any digest does: only whether the store answers matters, not whether the blob exists.
_PROBE = Digest.parse("sha256:" + "0" * 64)


class _Check:
    """One dependency check, bounded in time and never running twice at once."""

    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._run = run
        self._running: asyncio.Task[None] | None = None

    async def problem(self) -> str | None:
        if self._running is not None and not self._running.done():
            return f"{self.name}: the previous check has not answered yet"
        self._running = asyncio.ensure_future(self._run())
        try:
            await asyncio.wait_for(asyncio.shield(self._running), CHECK_TIMEOUT)
        except TimeoutError:
            return f"{self.name}: no answer within {CHECK_TIMEOUT:g} s"
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            return f"{self.name}: {_describe(exc)}"
        return None


def _describe(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    message = " ".join(str(cause).split())[:300]
    return f"{type(cause).__name__}: {message}" if message else type(cause).__name__


def _database_check(db: Database) -> Callable[[], Awaitable[None]]:
    def query() -> None:
        count_shared_settings(db)  # a table of the schema, not `SELECT 1`

    async def run() -> None:
        await asyncio.to_thread(query)

    return run


def _blob_store_check(store: BlobStore) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        # The driver's own lookup: the filesystem driver stats a path under its root (a
        # broken or hung mount raises or times out), an object store answers a HEAD.
        await store.stat(_PROBE)

    return run


def health_routes(db: Database, store: BlobStore, draining: Callable[[], bool]) -> list[BaseRoute]:
    checks = [
        _Check("database", _database_check(db)),
        _Check("blob store", _blob_store_check(store)),
    ]

    async def livez(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def readyz(_request: Request) -> PlainTextResponse:
        if draining():
            return PlainTextResponse("shutting down\n", status_code=503)
        problems = [p for p in await asyncio.gather(*(c.problem() for c in checks)) if p]
        if problems:
            return PlainTextResponse("".join(p + "\n" for p in problems), status_code=503)
        return PlainTextResponse("ok")

    return [
        Route("/healthz", livez, methods=["GET", "HEAD"]),
        Route("/livez", livez, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]
