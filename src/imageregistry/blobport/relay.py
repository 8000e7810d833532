"""The blob port's relay: a blob held in object storage, fetched by the port for a client.

With `storage_s3: {redirect: false}` clients are not sent to the object store, so the
registry passes the bytes on itself. On the main port they travel as a fresh Python object
per megabyte, copied again into Granian's buffers. Here a thread of the blob port makes
the store's presigned request (`BlobStore.relay_source`) on a socket of its own and moves
the answer to the client's socket through one reused buffer: `recv_into`, then `sendall`,
with the GIL released around each call. That costs about a third of the CPU of the main
port's stream and is what lets a proxied pull keep up with the store
(docs/benchmarks.md#data-plane-on-object-storage-versus-cncf-distribution).

Both functions block; the port runs them in its relay threads (`server.BlobPortServer`).
`h11` reads the store's answer head; the body is read past it, counted against the
`Content-Length` the store announced. Nothing here logs a URL: it carries a signature.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from imageregistry.storage.driver import RelayMethod, RelaySource

# Per relay in flight. Bigger gulps from the store's socket are faster: at 1 GiB from moto
# 4 MiB relayed about 8 % faster than 1 MiB (docs/benchmarks.md); the port's threads bound
# the buffers to RELAY_THREADS x 4 MiB per worker.
BUFFER_SIZE = 4 << 20
MAX_ANSWER_HEAD = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class RelayFailed(Exception):
    """The object store could not be reached or did not answer as HTTP (no status)."""


@dataclass
class Upstream:
    """The store's answer: its status and header fields (names lower-case), the socket
    positioned in its body, and the body bytes that arrived with the head."""

    sock: socket.socket
    status: int
    fields: dict[str, str]
    early: bytes

    def object_size(self) -> int | None:
        """The stored object's whole size: `Content-Length` of a 200, the total of a 206's
        `Content-Range`; None when the answer does not say."""
        if self.status == 206:
            match = _CONTENT_RANGE.fullmatch(self.fields.get("content-range", ""))
            return int(match.group(3)) if match else None
        length = self.fields.get("content-length", "")
        return int(length) if self.status == 200 and length.isdigit() else None

    def close(self) -> None:
        self.sock.close()


def open_upstream(
    source: RelaySource, method: RelayMethod, span: tuple[int, int] | None, timeout: float
) -> Upstream:
    """Send `method` for `source.url` (with `Range` for the inclusive `span`) and read the
    answer's head. `RelayFailed` when the store cannot be reached or answers garbage."""
    url = urlsplit(source.url)
    https = url.scheme == "https"
    host = url.hostname or ""
    try:
        sock = socket.create_connection((host, url.port or (443 if https else 80)), timeout)
    except OSError as exc:
        raise RelayFailed(f"cannot connect to {host}: {exc}") from None
    try:
        if https:
            sock = (source.tls or ssl.create_default_context()).wrap_socket(
                sock, server_hostname=host
            )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_ANSWER_HEAD)
        fields = [("Host", url.netloc), ("Connection", "close")]
        if span is not None:
            fields.append(("Range", f"bytes={span[0]}-{span[1]}"))
        target = f"{url.path}?{url.query}" if url.query else url.path
        sock.sendall(http.send(h11.Request(method=method, target=target, headers=fields)))
        sock.sendall(http.send(h11.EndOfMessage()) or b"")
        answer = _answer_head(sock, http)
    except (OSError, h11.ProtocolError) as exc:
        sock.close()
        raise RelayFailed(f"no answer from {host}: {exc}") from None
    head = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in answer.headers
    }
    return Upstream(sock, answer.status_code, head, http.trailing_data[0])


def _answer_head(sock: socket.socket, http: h11.Connection) -> h11.Response:
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(MAX_ANSWER_HEAD)
            http.receive_data(data)  # b"" (closed before a head) makes h11 raise
        elif isinstance(event, h11.Response):
            return event
        # an informational (1xx) answer: the real one follows


def relay_body(
    upstream: Upstream, client: socket.socket, count: int, sent: Callable[[int], None]
) -> None:
    """Pass `count` bytes of the store's answer body to `client`, reporting each write to
    `sent`. `RelayFailed` when the store's side fails, stalls past its socket timeout or
    ends early; `OSError` (`TimeoutError` included) when the client's side does."""
    early = upstream.early[:count]
    _send_all(client, memoryview(early), sent)
    left = count - len(early)
    buffer = bytearray(min(BUFFER_SIZE, left))
    view = memoryview(buffer)
    while left > 0:
        try:
            got = upstream.sock.recv_into(buffer, min(len(buffer), left))
        except OSError as exc:
            raise RelayFailed(f"reading its answer failed with {left} bytes to go: {exc}") from None
        if got == 0:
            raise RelayFailed(f"its answer ended {left} bytes early")
        _send_all(client, view[:got], sent)
        left -= got


def _send_all(client: socket.socket, data: memoryview, sent: Callable[[int], None]) -> None:
    """`sendall` with the socket's timeout for each write rather than for the whole: a
    slow client that keeps reading is served, one that stops is dropped."""
    while data:
        written = client.send(data)
        sent(written)
        data = data[written:]
