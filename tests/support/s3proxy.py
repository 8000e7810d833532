"""A loopback HTTP/1.1 proxy in front of an S3 server, to count and stall requests.

Not a mock: every request goes on to the real server (Swift or moto) unchanged, Host
header included, so SigV4 signatures still match. The proxy reads each request's head to
note its method and target (``requests``), which lets a test count ``DeleteObjects`` or
``ListObjectsV2`` calls. ``hold_response(match)`` makes the first matching request reach
the server but keeps its answer from the client (``held`` is set then): the client is
stuck exactly after the store acted, which is where a test kills it. ``release()`` drops
the held connection. ``delay_response(match, seconds)`` hands every matching request's answer
over that much later (retries included): a store slow to answer one kind of request.
With ``tls`` clients reach the proxy over TLS: a store behind an HTTPS endpoint.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

Match = Callable[[str, str], bool]


class S3Proxy:
    def __init__(self, upstream: str, tls: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(upstream)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self.requests: list[tuple[str, str]] = []
        self.held = threading.Event()
        self._release = threading.Event()
        self._match: Match | None = None
        self._delay: tuple[Match, float] | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._tls = tls  # clients then reach the proxy over TLS (the store stays plain)
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def count(self, match: Match) -> int:
        with self._lock:
            return sum(1 for method, target in self.requests if match(method, target))

    def hold_response(self, match: Match) -> None:
        self._match = match

    def release(self) -> None:
        self._release.set()

    def delay_response(self, match: Match, seconds: float) -> None:
        self._delay = (match, seconds)

    # -- the proxy ---------------------------------------------------------------------

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        frozen: asyncio.Event,
        pause: list[float],
    ) -> None:
        try:
            while data := await reader.read(1 << 16):
                if pause[0]:
                    await asyncio.sleep(pause[0])
                    pause[0] = 0.0
                if frozen.is_set():
                    self.held.set()
                    await asyncio.to_thread(self._release.wait)
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _copy_body(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size_line = await reader.readuntil(b"\r\n")
                writer.write(size_line)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                        writer.write(trailer)
                    writer.write(b"\r\n")
                    break
                writer.write(await reader.readexactly(size + 2))
                await writer.drain()
            return
        remaining = int(headers.get(b"content-length", b"0") or 0)
        while remaining:
            data = await reader.read(min(remaining, 1 << 16))
            if not data:
                raise ConnectionError("client went away mid-body")
            writer.write(data)
            remaining -= len(data)
            await writer.drain()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(self._host, self._port)
        except OSError:
            client_w.close()
            return
        frozen = asyncio.Event()
        pause = [0.0]  # seconds to wait before handing over the next answer
        relay = asyncio.ensure_future(self._relay(up_r, client_w, frozen, pause))
        try:
            while True:
                head = await client_r.readuntil(b"\r\n\r\n")
                method, target = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")[:2]
                with self._lock:
                    self.requests.append((method, target))
                    match = self._match
                    if match is not None and match(method, target):
                        self._match = None
                        frozen.set()
                    if self._delay is not None and self._delay[0](method, target):
                        pause[0] = self._delay[1]
                up_w.write(head)
                await self._copy_body(client_r, up_w, head)
                await up_w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            pass
        finally:
            if not frozen.is_set():
                up_w.close()
            await relay
            up_w.close()

    # -- lifecycle ---------------------------------------------------------------------

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._tls)
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    @contextmanager
    def running(self) -> Iterator[S3Proxy]:
        started = threading.Event()
        thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        thread.start()
        started.wait(30)
        try:
            yield self
        finally:
            self._release.set()

            async def stop() -> None:
                if self._server is not None:
                    self._server.close()
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._loop.stop()

            asyncio.run_coroutine_threadsafe(stop(), self._loop)
            thread.join(30)


def is_delete_objects(method: str, target: str) -> bool:
    """``POST /bucket?delete`` (path-style): S3's batch delete."""
    query = target.partition("?")[2]
    return method == "POST" and "delete" in query.split("&")


def is_list_objects(method: str, target: str) -> bool:
    """``GET /bucket?list-type=2...``: one page of ListObjectsV2."""
    return method == "GET" and "list-type=2" in target.partition("?")[2]


def is_create_multipart(method: str, target: str) -> bool:
    """``POST /bucket/key?uploads``: CreateMultipartUpload."""
    query = target.partition("?")[2]
    return method == "POST" and "uploads" in (item.split("=")[0] for item in query.split("&"))
