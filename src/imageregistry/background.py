"""Run a coroutine beside the server for as long as a block lasts.

The server's lifespan starts its long-running helpers (the prune scheduler, the CPU-affinity
pinning) with this; on exit the task is cancelled and awaited, so none outlives shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, Any]) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
