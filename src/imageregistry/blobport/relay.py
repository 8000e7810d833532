"""The blob port's relay: a blob held in object storage, fetched by the port for a client.

With `storage_s3: {redirect: false}` clients are not sent to the object store, so the
registry passes the bytes on itself. The main port reads them from the store into a new
Python object per piece, which Granian copies once more into its own buffers. Here a
thread of the blob port makes the store's presigned request (`storage/presigned.py`) and
moves the answer to the client's socket through one reused buffer: `recv_into`, then
`send`, with the GIL released around each call. That costs about half the CPU of the
main port's stream and lets a proxied pull outpace CNCF distribution's
(docs/benchmarks.md#data-plane-on-object-storage-versus-cncf-distribution).

`relay_body` blocks; the port runs it in its relay threads (`server.BlobPortServer`),
counted against the `Content-Length` the store announced."""

from __future__ import annotations

import socket
from collections.abc import Callable

from imageregistry.storage.presigned import Upstream, UpstreamFailed, receive

# Per relay in flight. Bigger gulps from the store's socket are faster: at 1 GiB from moto
# 4 MiB relayed about 8 % faster than 1 MiB (docs/benchmarks.md); the port's threads bound
# the buffers to RELAY_THREADS x 4 MiB per worker.
BUFFER_SIZE = 4 << 20


def relay_body(
    upstream: Upstream, client: socket.socket, count: int, sent: Callable[[int], None]
) -> None:
    """Pass `count` bytes of the store's answer body to `client` as they arrive, reporting
    each write to `sent`. `UpstreamFailed` when the store's side fails, stalls past its
    socket timeout or ends early; `OSError` (`TimeoutError` included) when the client's
    side does."""
    buffer = memoryview(bytearray(min(BUFFER_SIZE, count)))
    left = count
    while left > 0:
        got = receive(upstream, buffer[: min(len(buffer), left)])
        if got == 0:
            raise UpstreamFailed(f"its answer ended {left} bytes early")
        _send_all(client, buffer[:got], sent)
        left -= got


def _send_all(client: socket.socket, data: memoryview, sent: Callable[[int], None]) -> None:
    """`sendall` with the socket's timeout for each write rather than for the whole: a
    slow client that keeps reading is served, one that stops is dropped."""
    while data:
        written = client.send(data)
        sent(written)
        data = data[written:]
