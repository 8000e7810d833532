"""The front-proxy port's HTTP/1.1 over TLS, against a small ASGI app, with real sockets.

What the aggregator and kubectl rely on: keep-alive across requests with and without
bodies (an unread empty body must not end the connection: Go reuses it for the next POST),
the presented client chain in the ASGI TLS extension, `http.disconnect` when a streaming
client goes away (a watch must end and give back its slot), `Expect: 100-continue`,
pipelined requests answered in order, and clear refusals of what cannot be served.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imageregistry.frontproxy.listener import MAX_HEAD, front_proxy_listener, server_context
from imageregistry.pki import ensure_tls
from tests.support.certs import Authority
from tests.support.postgres import free_port


class App:
    """/echo reads the body and answers its size and the chain length; /stream streams
    until the client goes away; /boom fails; /ignore answers without reading the body."""

    def __init__(self) -> None:
        self.disconnected = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()
            return
        size = 0
        if path == "/echo":
            while True:
                message = await receive()
                size += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
        chain = scope["extensions"]["tls"]["client_cert_chain"]
        body = f"{scope['method']} {size} {len(chain)}".encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Listener:
    def __init__(self, tmp: Path) -> None:
        self.tls = ensure_tls(tmp / "tls", ["127.0.0.1"])
        self.ca = Authority.create(tmp, "front-proxy-ca")
        self.client_cert = self.ca.client(tmp, "front-proxy-client")
        self.port = free_port()
        self.app = App()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._run(),))

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        context = server_context(str(self.tls.cert), str(self.tls.key))
        async with front_proxy_listener(f"127.0.0.1:{self.port}", self.app, context):  # type: ignore[arg-type]
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Listener:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()

    def context(self, with_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.tls.ca_cert)
        if with_cert:
            context.load_cert_chain(*self.client_cert)
        return context

    def client(self, with_cert: bool = True) -> httpx.Client:
        return httpx.Client(
            base_url=f"https://127.0.0.1:{self.port}", verify=self.context(with_cert), timeout=30
        )

    def raw(self) -> ssl.SSLSocket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        return self.context().wrap_socket(sock, server_hostname="127.0.0.1")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    with Listener(tmp_path) as running:
        yield running


def read_until(sock: ssl.SSLSocket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_keep_alive_bodies_and_the_client_chain(listener: Listener) -> None:
    with listener.client() as client:
        assert client.get("/plain").text == "GET 0 1"  # the body was never read
        assert client.post("/echo", content=b"x" * 100_000).text == "POST 100000 1"
        chunked = client.post("/echo", content=iter([b"ab", b"cde"]))
        assert chunked.text == "POST 5 1"
        assert client.post("/plain", content=b"small").text == "POST 0 1"  # unread, small
        assert client.head("/plain").status_code == 200
        assert client.get("/plain").text == "GET 0 1"
    with listener.client(with_cert=False) as client:
        assert client.get("/plain").text == "GET 0 0"


def test_one_connection_carries_every_request(listener: Listener) -> None:
    with listener.raw() as sock:
        for _ in range(3):
            sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_until(sock, b"GET 0 1").startswith(b"HTTP/1.1 200")


def test_pipelined_requests_are_answered_in_order(listener: Listener) -> None:
    with listener.raw() as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        data = read_until(sock, b"GET 0 1")
        assert data.index(b"POST 3 1") < data.index(b"GET 0 1")


def test_a_client_that_goes_away_ends_a_stream(listener: Listener) -> None:
    sock = listener.raw()
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"first" in read_until(sock, b"first")
    sock.close()
    assert listener.app.disconnected.wait(30)


def test_expect_100_continue(listener: Listener) -> None:
    with listener.raw() as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 100")
        sock.sendall(b"body")
        assert b"POST 4 1" in read_until(sock, b"POST 4 1")


def test_what_cannot_be_served_is_refused(listener: Listener) -> None:
    with listener.client() as client:
        assert client.get("/boom").status_code == 500
        big = client.post("/plain", content=b"x" * (4 * MAX_HEAD))  # unread: connection ends
        assert big.status_code == 200
        assert client.get("/plain").status_code == 200  # on a new connection
    with listener.raw() as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 * MAX_HEAD))
        assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 431")


def test_a_certificate_of_another_ca_is_carried_to_the_app_unjudged(
    listener: Listener, tmp_path: Path
) -> None:
    """The port does not judge the chain (auth/requestheader.py does, per request, against
    the current CA): a certificate no CA of ours signed completes the handshake and reaches
    the app, so its request is served like one without a certificate."""
    other = Authority.create(tmp_path, "other-ca")
    context = listener.context(with_cert=False)
    context.load_cert_chain(*other.client(tmp_path, "front-proxy-client"))
    assert _get_over(context, listener.port).startswith(b"HTTP/1.1 200")
    with httpx.Client(
        base_url=f"https://127.0.0.1:{listener.port}", verify=context, timeout=30
    ) as client:
        assert client.get("/plain").text == "GET 0 1"


def _get_over(context: ssl.SSLContext, port: int) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = tls.recv(100)
        if not answer:
            raise ConnectionError("closed")
        return answer
