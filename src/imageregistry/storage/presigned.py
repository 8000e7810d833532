"""A presigned object-store request made on a socket of the registry's own.

obstore reads an answer through its own buffers, and hands each piece over as a new Python
object; for the bulk of a blob that is most of the CPU a proxied pull costs
(docs/benchmarks.md#data-plane-on-object-storage-versus-cncf-distribution). So the bytes of
a blob served through the registry come from the blob's presigned URL
(`BlobStore.relay_source`), requested here with `h11` for the answer's head and read past
it with `recv_into` into buffers the caller reuses. The blob port's relay
(`blobport/relay.py`) and the S3 driver's `read` (the main port's stream) both use it.

Everything here blocks: callers run it in threads. Nothing here logs a URL: it carries a
signature.
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from imageregistry.storage.driver import RelayMethod, RelaySource

MAX_ANSWER_HEAD = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class UpstreamFailed(Exception):
    """The object store could not be reached, did not answer as HTTP, or failed or
    stalled while its answer's body was being read."""


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
    answer's head. `UpstreamFailed` when the store cannot be reached or answers garbage."""
    url = urlsplit(source.url)
    https = url.scheme == "https"
    host = url.hostname or ""
    try:
        sock = socket.create_connection((host, url.port or (443 if https else 80)), timeout)
    except OSError as exc:
        raise UpstreamFailed(f"cannot connect to {host}: {exc}") from None
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
        raise UpstreamFailed(f"no answer from {host}: {exc}") from None
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


def receive(upstream: Upstream, view: memoryview) -> int:
    """Some of the answer's body into `view` (the bytes that came with the head first, then
    one read of the socket); 0 at the answer's end. `UpstreamFailed` when the store fails
    or stalls past the socket's timeout."""
    if upstream.early:
        count = min(len(upstream.early), len(view))
        view[:count] = upstream.early[:count]
        upstream.early = upstream.early[count:]
        return count
    try:
        return upstream.sock.recv_into(view)
    except OSError as exc:
        raise UpstreamFailed(f"reading its answer failed: {exc}") from None


def read_into(upstream: Upstream, buffer: bytearray, want: int) -> int:
    """Fill `buffer[:want]` from the answer's body; the count, short only at the answer's
    end."""
    view = memoryview(buffer)
    got = 0
    while got < want and (count := receive(upstream, view[got:want])):
        got += count
    return got
