"""`front_proxy_listen`: the TLS port an `APIService` points at, with client certificates.

Granian (2.8) can verify client certificates only by requiring one on every connection, and
does not hand the verified certificate to the application (the ASGI TLS extension is not
implemented), so the main port cannot serve the front-proxy contract. This listener does:
every worker listens with `SO_REUSEPORT` (like the blob and metrics ports), terminates TLS
with OpenSSL through pyOpenSSL (memory BIOs under asyncio streams), *requests* a client
certificate and accepts whatever chain is presented (a client without one is served as any
other client), then serves the same ASGI application over HTTP/1.1 (h11), with the
presented chain in `scope["extensions"]["tls"]["client_cert_chain"]` as the ASGI TLS
extension specifies. `frontproxy/middleware.py` and `auth/requestheader.py` decide what the
chain is worth: the latter verifies it against the request-header CA, so a certificate
from another CA is served like a request without one (kube-apiserver's contract: the
headers are ignored and the request is anonymous or uses its own credentials). The
handshake still proves the client holds the leaf's private key. The standard `ssl` module
cannot do this: it can request a client certificate only together with verifying it, and
a chain that does not verify ends the handshake.

One request at a time per connection, keep-alive, request bodies streamed to the app,
responses streamed to the client (chunked when the app gives no length), `http.disconnect`
when the client goes away (watches end then). A handshake that fails (no shared protocol,
a client that cannot sign with its certificate's key) closes the connection before any
request is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote_to_bytes

import h11
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from starlette.types import ASGIApp, Message

from imageregistry.auth.requestheader import RELOAD_SECONDS, CABundle
from imageregistry.blobport.sockets import bind

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 30.0  # a request head must arrive within this
# A kept-alive connection without a request is closed after this: longer than the 90 s
# after which Go clients (the aggregator) drop idle connections, so they close first and
# never send a request on a connection the server is closing.
IDLE_TIMEOUT = 120.0
HANDSHAKE_TIMEOUT = 15.0
LINGER = 5.0  # after our close_notify, how long the client's remaining bytes are read
# A request body the app did not read (an early 403 or 413) is read and dropped up to this
# much, so the client gets the answer instead of a reset and the connection can be reused.
MAX_DISCARD = 8 << 20
MAX_CONNECTIONS = 512  # per worker; the aggregator needs a few, anyone else gets closed
_READ = 64 * 1024
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def server_context(cert_file: str, key_file: str) -> SSL.Context:
    """TLS 1.2+, our serving certificate, a client certificate requested (not required)
    and any presented chain accepted: `auth/requestheader.py` verifies it."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.use_certificate_chain_file(cert_file)
    ctx.use_privatekey_file(key_file)
    ctx.check_privatekey()
    ctx.set_verify(SSL.VERIFY_PEER, _accept_any_chain)
    ctx.set_alpn_select_callback(_alpn)
    return ctx


def _accept_any_chain(
    _conn: SSL.Connection, _cert: Any, _errno: int, _depth: int, _ok: int
) -> bool:
    """The chain's worth is decided per request against the current CA bundle."""
    return True


def _alpn(_conn: SSL.Connection, offered: list[bytes]) -> bytes | Any:
    return b"http/1.1" if b"http/1.1" in offered else SSL.NO_OVERLAPPING_PROTOCOLS


def tls_extension(conn: SSL.Connection) -> dict[str, Any]:
    """The ASGI TLS extension's dictionary for a completed handshake: the chain as the
    client presented it, leaf first (on a server, OpenSSL's peer chain leaves the leaf
    out)."""
    leaf = conn.get_peer_certificate(as_cryptography=True)
    chain = [leaf] if leaf is not None else []
    for cert in conn.get_peer_cert_chain(as_cryptography=True) or []:
        if leaf is None or cert != leaf:
            chain.append(cert)
    return {
        "server_cert": None,
        "client_cert_chain": [c.public_bytes(Encoding.PEM).decode("ascii") for c in chain],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(conn.get_protocol_version_name()),
        "cipher_suite": None,
    }


class _TLSStream:
    """TLS over an asyncio stream through OpenSSL's memory BIOs: `read`/`write`/`drain`/
    `get_extra_info`/`close` as `_Connection` uses a reader and a writer."""

    def __init__(
        self, context: SSL.Context, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.conn = SSL.Connection(context, None)
        self.conn.set_accept_state()
        self._reader = reader
        self._writer = writer

    def _move_out(self) -> None:
        while True:
            try:
                data = self.conn.bio_read(_READ)
            except SSL.WantReadError:
                return
            if not data:
                return
            self._writer.write(data)

    async def _feed(self) -> bool:
        """Move what OpenSSL wrote to the socket, and what the socket has to OpenSSL;
        False when the peer closed the connection."""
        self._move_out()
        await self._writer.drain()
        data = await self._reader.read(_READ)
        if not data:
            return False
        self.conn.bio_write(data)
        return True

    async def handshake(self) -> None:
        while True:
            try:
                self.conn.do_handshake()
                break
            except SSL.WantReadError:
                if not await self._feed():
                    raise ConnectionError("the client closed during the handshake") from None
        self._move_out()
        await self._writer.drain()

    async def read(self, n: int) -> bytes:
        while True:
            try:
                return self.conn.recv(n)
            except SSL.WantReadError:
                if not await self._feed():
                    return b""
            except (SSL.ZeroReturnError, SSL.SysCallError):
                return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = self.conn.send(view)
            view = view[sent:]
            self._move_out()

    async def drain(self) -> None:
        await self._writer.drain()

    def get_extra_info(self, name: str) -> Any:
        if name == "ssl_object":
            return self.conn
        return self._writer.get_extra_info(name)

    async def aclose(self) -> None:
        """Send close_notify, then read and drop what the client still sends (for at most
        `LINGER` seconds) before closing: closing a socket with unread data resets the
        connection, and the client would lose an answer it was sent (a 431 for a head too
        large that it is still writing)."""
        try:
            async with asyncio.timeout(LINGER):
                with contextlib.suppress(SSL.Error):
                    self.conn.shutdown()
                self._move_out()
                await self._writer.drain()
                while await self._reader.read(_READ):
                    pass
        except (OSError, TimeoutError):
            pass
        finally:
            self._writer.close()


@contextlib.asynccontextmanager
async def front_proxy_listener(
    listen: str, app: ASGIApp, context: SSL.Context, ca_file: CABundle | None = None
) -> AsyncIterator[None]:
    """Serve `app` on `listen`. With `ca_file`, the bundle is polled every
    `RELOAD_SECONDS` off the event loop (a ConfigMap is read over the network); the
    authenticator uses whatever the bundle holds now."""
    sock = bind(listen, reuse_port=True)
    connections: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            connections.add(task)
        stream = _TLSStream(context, reader, writer)
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                await stream.handshake()
            await _Connection(app, stream, stream).run()
        except (OSError, TimeoutError, h11.ProtocolError, SSL.Error) as exc:
            # the client went away or sent what cannot be answered
            log.debug("front_proxy_listen: connection ended: %r", exc)
        except Exception:
            log.exception("front_proxy_listen: a connection failed")
        finally:
            if task is not None:
                connections.discard(task)
            await stream.aclose()

    server = await asyncio.start_server(serve, sock=sock)
    log.info("front proxy (aggregated API) listening on %s", listen)
    reloads = asyncio.create_task(_polling(ca_file)) if ca_file else None
    try:
        yield
    finally:
        if reloads is not None:
            reloads.cancel()
        server.close()
        for task in list(connections):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait_closed()


async def _polling(ca_file: CABundle) -> None:
    while True:
        await asyncio.sleep(RELOAD_SECONDS)
        await asyncio.to_thread(ca_file.poll)


class _Connection:
    def __init__(self, app: ASGIApp, reader: _TLSStream, writer: _TLSStream) -> None:
        self.app = app
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        ssl_object = writer.get_extra_info("ssl_object")
        self.tls = tls_extension(ssl_object) if ssl_object is not None else None
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("sockname")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.server = (str(sock[0]), int(sock[1])) if isinstance(sock, tuple) else None

    async def _event(self, timeout: float) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                event = self.http.next_event()
                if event is not h11.NEED_DATA:
                    return event
                self.http.receive_data(await self.reader.read(_READ))

    async def run(self) -> None:
        timeout = HEAD_TIMEOUT
        while True:
            try:
                event = await self._event(timeout)
            except TimeoutError:
                return
            except h11.RemoteProtocolError as exc:
                await self._refuse(exc.error_status_hint)
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed, or junk between requests
            exchange = _Exchange(self, event)
            await exchange.run()
            if exchange.disconnected or not await exchange.finish_body():
                return
            if self.http.our_state is not h11.DONE or self.http.their_state is not h11.DONE:
                return
            self.http.start_next_cycle()
            timeout = IDLE_TIMEOUT

    async def _refuse(self, status: int) -> None:
        with contextlib.suppress(h11.LocalProtocolError):
            head = [("Content-Length", "0"), ("Connection", "close")]
            self.writer.write(self.http.send(h11.Response(status_code=status, headers=head)) or b"")
            self.writer.write(self.http.send(h11.EndOfMessage()) or b"")
            await self.writer.drain()


class _Exchange:
    """One request and its response, between an h11 connection and the ASGI app."""

    def __init__(self, conn: _Connection, request: h11.Request) -> None:
        self.conn = conn
        self.request = request
        self.body_done = False
        self.response_started = False
        self.response_done = asyncio.Event()
        self.disconnected = False
        self.head = request.method == b"HEAD"
        self._watcher: asyncio.Task[None] | None = None

    def scope(self) -> dict[str, Any]:
        target = self.request.target
        raw_path, _, query = target.partition(b"?")
        extensions: dict[str, Any] = {}
        if self.conn.tls is not None:
            extensions["tls"] = self.conn.tls
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": self.request.http_version.decode("ascii"),
            "method": self.request.method.decode("ascii"),
            "scheme": "https",
            "path": unquote_to_bytes(raw_path).decode("utf-8", "surrogateescape"),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in self.request.headers],
            "client": self.conn.client,
            "server": self.conn.server,
            "extensions": extensions,
            "state": {},
        }

    async def run(self) -> None:
        try:
            await self.conn.app(self.scope(), self.receive, self.send)
        except Exception:
            if self.response_started:
                raise  # the connection ends mid-response; the caller closes it
            log.exception("front_proxy_listen: the application failed")
            await self._send_error(500)
        finally:
            self.response_done.set()
            if self._watcher is not None:
                self._watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watcher
        if not self.response_started:
            await self._send_error(500)

    async def finish_body(self) -> bool:
        """Read what is left of the request (h11 reports the end of even an empty body
        only as an event), so the connection can carry the next request; False when more
        than `MAX_DISCARD` bytes of it were left unread (the connection is closed instead)."""
        left = MAX_DISCARD
        while not self.body_done and self.conn.http.their_state is h11.SEND_BODY:
            event = await self.conn._event(HEAD_TIMEOUT)
            if isinstance(event, h11.EndOfMessage):
                self.body_done = True
            elif isinstance(event, h11.Data) and len(event.data) <= left:
                left -= len(event.data)
            else:
                return False
        return True

    async def receive(self) -> Message:
        http = self.conn.http
        if not self.body_done and not self.disconnected:
            if http.they_are_waiting_for_100_continue and not self.response_started:
                self.conn.writer.write(
                    http.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                )
            try:
                event = await self.conn._event(HEAD_TIMEOUT)
            except (OSError, TimeoutError, h11.RemoteProtocolError):
                self.disconnected = True
                return {"type": "http.disconnect"}
            if isinstance(event, h11.Data):
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            if isinstance(event, h11.EndOfMessage):
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            self.disconnected = True
            return {"type": "http.disconnect"}
        # The body is read: the next message is the client going away (or the response
        # being complete), as the ASGI HTTP spec has it.
        if not self.disconnected:
            if self._watcher is None:
                self._watcher = asyncio.create_task(self._watch_close())
            done = asyncio.create_task(self.response_done.wait())
            try:
                await asyncio.wait({self._watcher, done}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                done.cancel()
        return {"type": "http.disconnect"}

    async def _watch_close(self) -> None:
        """Read until the client closes; what it sends meanwhile (a pipelined request) is
        kept for h11, up to one request head."""
        buffered = 0
        while buffered <= MAX_HEAD:
            data = await self.conn.reader.read(_READ)
            if not data:
                self.disconnected = True
                return
            buffered += len(data)
            self.conn.http.receive_data(data)
        await self.response_done.wait()

    async def send(self, message: Message) -> None:
        http, writer = self.conn.http, self.conn.writer
        if self.disconnected:
            raise OSError("the client closed the connection")
        kind = message["type"]
        if kind == "http.response.start":
            if self.response_started:
                raise RuntimeError("http.response.start sent twice")
            self.response_started = True
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            status = int(message["status"])
            writer.write(http.send(h11.Response(status_code=status, headers=headers)) or b"")
        elif kind == "http.response.body":
            if not self.response_started:
                raise RuntimeError("http.response.body before http.response.start")
            body = bytes(message.get("body", b""))
            if body and not self.head:
                writer.write(http.send(h11.Data(data=body)) or b"")
            if not message.get("more_body", False):
                writer.write(http.send(h11.EndOfMessage()) or b"")
                self.response_done.set()
        else:
            raise RuntimeError(f"unsupported ASGI message {kind!r}")
        await writer.drain()

    async def _send_error(self, status: int) -> None:
        if self.response_started:
            return
        self.response_started = True
        with contextlib.suppress(h11.LocalProtocolError):
            head = [("Content-Length", "0"), ("Connection", "close")]
            self.conn.writer.write(
                self.conn.http.send(h11.Response(status_code=status, headers=head)) or b""
            )
            self.conn.writer.write(self.conn.http.send(h11.EndOfMessage()) or b"")
            await self.conn.writer.drain()
