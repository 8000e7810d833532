"""The blob port's HTTP/1.1 server: h11 for the protocol, sendfile(2) for the bytes of a
file, relay threads (`relay`) for those of an object in object storage.

Each Granian worker runs one on its own event loop, bound with `SO_REUSEPORT`, so the
kernel spreads connections over the workers. It answers only
`GET`/`HEAD /blobs/<digest>?expires=..&signature=..` (the route table and the chain that
checks the link and sends the blob are `port_routes`), with a single `Range` as on the main
port, and keeps connections alive between requests; every refusal is rendered by
`_Connection.render`. The socket is non-blocking: the body goes out in as few `sendfile`
calls as the socket buffer allows, waiting for writability in between, so a slow client
holds a connection, not the loop. Limits: `MAX_HEAD` bytes of request head, `IDLE_TIMEOUT`
for a whole request head, `STALL_TIMEOUT` for a client that stops reading,
`MAX_CONNECTIONS` per worker. Nothing here logs a request's query, which holds the link's
signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import h11

from imageregistry.blobport.links import BlobLinks
from imageregistry.blobport.port_routes import BlobPortDispatcher, PortRequest
from imageregistry.blobport.relay import relay_body
from imageregistry.blobport.sockets import bind
from imageregistry.errorcodes import RegistryError, envelope
from imageregistry.storage.driver import BlobStore, RelayMethod, RelaySource
from imageregistry.storage.presigned import Upstream, open_upstream

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_Span = TypeVar("_Span", "_FileSpan", "_RelaySpan")

MAX_HEAD = 16 * 1024
MAX_CONNECTIONS = 1024
IDLE_TIMEOUT = 30.0
STALL_TIMEOUT = 60.0
SHUTDOWN_GRACE = 25.0  # inside the kubelet's default 30 s termination grace
RELAY_THREADS = 32  # per worker: object-storage blobs relayed at once (`relay`)
_RECV_SIZE = 64 * 1024


class ObservedRequest(Protocol):
    header: tuple[bytes, bytes]  # X-Request-Id, for every response to the request

    def end(self, status: int, sent: int, error_body: bytes = b"", raised: bool = False) -> None:
        """The answer (status, body bytes sent, an error's body) is over."""


class Observer(Protocol):
    """Each request's id, series and audit event (`observability.ports.PortObserver`)."""

    def begin(
        self, method: bytes, path: bytes, headers: Any, client: Any = None
    ) -> ObservedRequest: ...

    def new_header(self) -> tuple[bytes, bytes]: ...


@contextlib.asynccontextmanager
async def blob_port(
    links: BlobLinks, store: BlobStore, observe: Observer | None = None
) -> AsyncIterator[None]:
    """Serve the blob port on `links.listen` for as long as the block lasts; on exit stop
    accepting, let transfers in flight finish for up to `SHUTDOWN_GRACE` seconds, then drop
    the rest."""
    server = BlobPortServer(bind(links.listen, reuse_port=True), links, store, observe)
    accepting = asyncio.create_task(server.accept_forever())
    log.info("blob port listening on %s", links.listen)
    try:
        yield
    finally:
        accepting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await accepting
        await server.close(SHUTDOWN_GRACE)


class BlobPortServer:
    def __init__(
        self,
        listener: socket.socket,
        links: BlobLinks,
        store: BlobStore,
        observe: Observer | None = None,
    ) -> None:
        self.observe = observe
        self.dispatcher = BlobPortDispatcher(links, store)
        self._listener = listener
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._relay_threads: ThreadPoolExecutor | None = None
        self.closing = False

    def in_relay_thread(self, call: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """`call(*args)` in one of the port's `RELAY_THREADS` threads (started on first
        use: a port that relays nothing has none); relays beyond that wait their turn."""
        if self._relay_threads is None:
            self._relay_threads = ThreadPoolExecutor(RELAY_THREADS, "blob-relay")
        return asyncio.get_running_loop().run_in_executor(self._relay_threads, call, *args)

    async def accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(MAX_CONNECTIONS)
        while True:
            await slots.acquire()
            try:
                sock, _ = await loop.sock_accept(self._listener)
            except OSError as exc:  # EMFILE, ENOBUFS, ECONNABORTED: back off, keep serving
                slots.release()
                log.warning("blob port: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            except BaseException:
                slots.release()
                raise
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(sock, self)
            task = asyncio.create_task(connection.serve())
            self._connections[task] = connection
            task.add_done_callback(functools.partial(self._forget, slots))

    def _forget(self, slots: asyncio.Semaphore, task: asyncio.Task[None]) -> None:
        self._connections.pop(task, None)
        slots.release()

    async def close(self, grace: float) -> None:
        self.closing = True
        self._listener.close()
        for task, connection in list(self._connections.items()):
            if not connection.busy:
                task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=grace)
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._relay_threads is not None:
            self._relay_threads.shutdown(wait=False)


@dataclass(frozen=True)
class _FileSpan:
    """A body part h11 passes through untouched (`send_with_data_passthrough`)."""

    fd: int
    offset: int
    count: int

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class _RelaySpan:
    """A relayed body, passed through h11 like `_FileSpan`."""

    upstream: Upstream
    count: int

    def __len__(self) -> int:
        return self.count


def _close_upstream(opening: asyncio.Future[Upstream]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


class _Connection:
    def __init__(self, sock: socket.socket, server: BlobPortServer) -> None:
        self.sock = sock
        self.server = server
        self.busy = False
        self.head = False  # the request being answered is a HEAD: no body, errors included
        self.status = 0  # of the response being sent, and its body bytes (for the metrics)
        self.sent = 0
        self.error_body = b""
        self.id_header: tuple[bytes, bytes] | None = None  # of the request being answered
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            self.peer: Any = sock.getpeername()
        except OSError:
            self.peer = None

    async def serve(self) -> None:
        try:
            while not self.server.closing:
                async with asyncio.timeout(IDLE_TIMEOUT):  # for the whole head, not per read
                    request = await self._next_request()
                if request is None:
                    return
                self.busy, self.head = True, request.method == b"HEAD"
                await self._observed(request)
                self.busy = False
                if not self._request_finished():
                    return
                self.http.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            error = RegistryError("BAD_REQUEST", str(exc), status=exc.error_status_hint)
            await self._last_error(error)
        except (OSError, TimeoutError, h11.LocalProtocolError):
            pass  # the client went away, stalled or sent what cannot be answered
        except Exception as exc:
            log.exception("blob port: a request failed")
            message = f"internal error ({type(exc).__name__})"
            await self._last_error(RegistryError("UNKNOWN", message))
        finally:
            self.sock.close()

    async def _next_request(self) -> h11.Request | None:
        loop = asyncio.get_running_loop()
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                data = await loop.sock_recv(self.sock, _RECV_SIZE)
                self.http.receive_data(data)  # b"" is the end of the stream
            elif isinstance(event, h11.Request):
                # h11 bounds a head that arrives in pieces; bound one that came whole too
                if sum(len(name) + len(value) for name, value in event.headers) > MAX_HEAD:
                    raise h11.RemoteProtocolError("request head too large", 431)
                return event
            elif isinstance(event, h11.ConnectionClosed):
                return None
            # anything else cannot start a request cycle; h11 raises on real garbage

    def _request_finished(self) -> bool:
        """Consume what is already buffered of the request; True if the connection can
        serve another one (a request with a body we did not read ends the connection)."""
        while self.http.their_state is h11.SEND_BODY:
            event = self.http.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.Data):
                return False
        return self.http.our_state is h11.DONE and self.http.their_state is h11.DONE

    async def _observed(self, request: h11.Request) -> None:
        observe = self.server.observe
        if observe is None:
            await self._answer(request)
            return
        self.status, self.sent, self.error_body = 0, 0, b""
        path = request.target.split(b"?", 1)[0]  # the query holds the link's signature
        observed = observe.begin(request.method, path, request.headers, self.peer)
        self.id_header, failed = observed.header, False
        try:
            await self._answer(request)
        except Exception as exc:  # the id stays for the error answer `serve` may send
            failed = not isinstance(exc, OSError | TimeoutError | h11.LocalProtocolError)
            raise
        else:
            self.id_header = None
        finally:  # a client gone mid-body still counts, with the status it was sent
            observed.end(self.status, self.sent, self.error_body, failed)

    def _id_headers(self) -> list[tuple[bytes, bytes]]:
        if self.id_header is None and self.server.observe is not None:
            self.id_header = self.server.observe.new_header()  # an answer to no request
        return [self.id_header] if self.id_header is not None else []

    async def _answer(self, request: h11.Request) -> None:
        """One request through the port's chain (`port_routes.BlobPortDispatcher`); every
        refusal it raises is rendered here, once."""
        info = PortRequest(
            request.method.decode("ascii", "replace"),
            request.target.decode("ascii", "replace"),
            {name.decode().lower(): value.decode("latin-1") for name, value in request.headers},
        )
        try:
            await self.server.dispatcher.dispatch(info, self)
        except RegistryError as error:
            await self.render(error)

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status = status
        fields: list[tuple[Any, Any]] = [*headers, *self._id_headers()]
        await self._send(self.http.send(h11.Response(status_code=status, headers=fields)))

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        await self._send_body(_FileSpan(fd, offset, count), self._sendfile)

    async def fetch(
        self, source: RelaySource, method: RelayMethod, span: tuple[int, int] | None
    ) -> Upstream:
        """The store's answer head, from one of the relay threads."""
        opening = self.server.in_relay_thread(open_upstream, source, method, span, STALL_TIMEOUT)
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:  # a connection closed at shutdown: free the socket
            opening.add_done_callback(_close_upstream)
            raise

    async def send_relayed(self, upstream: Upstream, count: int) -> None:
        await self._send_body(_RelaySpan(upstream, count), self._relay)

    async def _send_body(self, body: _Span, send: Callable[[_Span], Awaitable[None]]) -> None:
        """A body h11 frames but passes through untouched (`send_with_data_passthrough`):
        `send` moves it, the framing around it goes out as bytes."""
        pieces = self.http.send_with_data_passthrough(h11.Data(data=body))  # type: ignore[arg-type]
        for piece in pieces or ():
            if piece is body:
                await send(body)
            else:
                await self._send(piece)

    async def _relay(self, span: _RelaySpan) -> None:
        """`relay.relay_body` in a relay thread, on this socket made blocking (with the
        stall timeout) for as long; a cancelled transfer (shutdown) is woken by shutting
        both sockets down, and waited for, before the socket is handed back."""
        self.sock.settimeout(STALL_TIMEOUT)
        copying = self.server.in_relay_thread(
            relay_body, span.upstream, self.sock, span.count, self._count_sent
        )
        try:
            await asyncio.shield(copying)
        except asyncio.CancelledError:
            for sock in (self.sock, span.upstream.sock):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):
                await copying
            raise
        finally:
            self.sock.setblocking(False)

    def _count_sent(self, count: int) -> None:
        self.sent += count

    async def end(self) -> None:
        await self._send(self.http.send(h11.EndOfMessage()))

    async def _last_error(self, error: RegistryError) -> None:
        """Answer `error` and close, unless a response had already begun."""
        if self.http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(OSError, TimeoutError, h11.LocalProtocolError):
                await self.render(error, close=True)

    async def render(self, error: RegistryError, *, close: bool = False) -> None:
        """The port's one error renderer: the OCI envelope of the main port
        (`errorcodes.envelope`), over h11; a HEAD gets the status and headers only."""
        body = json.dumps(envelope(error)).encode()
        headers: list[tuple[Any, Any]] = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *self._id_headers(),
        ]
        if close:
            headers.append(("Connection", "close"))
        headers += list(error.headers.items())
        self.status, self.error_body = error.status, body
        await self._send(self.http.send(h11.Response(status_code=error.status, headers=headers)))
        if not self.head:
            self.sent += len(body)
            await self._send(self.http.send(h11.Data(data=body)))
        await self._send(self.http.send(h11.EndOfMessage()))

    async def _send(self, data: bytes | None) -> None:
        if data:
            async with asyncio.timeout(STALL_TIMEOUT):
                await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _sendfile(self, span: _FileSpan) -> None:
        out, offset, left = self.sock.fileno(), span.offset, span.count
        while left > 0:
            try:
                sent = os.sendfile(out, span.fd, offset, left)
            except BlockingIOError:
                await self._writable(out)
                continue
            if sent == 0:
                raise ConnectionError("the blob file is shorter than it was when opened")
            offset += sent
            left -= sent
            self.sent += sent

    async def _writable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_writer(fd, _resolve, ready)
        try:
            async with asyncio.timeout(STALL_TIMEOUT):
                await ready
        finally:
            loop.remove_writer(fd)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
