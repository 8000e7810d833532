"""`metrics_listen`: `/metrics` on an address of its own, in plain HTTP.

Operators put the scrape on a port that is not exposed to registry clients (a
NetworkPolicy or firewall then keeps it in-cluster). Every worker listens with
`SO_REUSEPORT`, like the blob port, so a scrape is answered whichever worker the kernel
picks; the answer is the same on each (multiprocess mode). Authorization is the main
port's (`endpoint.Scraper`): a bearer token bound to `system:monitoring`. The server
speaks just enough HTTP/1.1 (h11) for a scraper: `GET /metrics`, one request per
connection, a bounded head and a time limit. Each answer carries `X-Request-Id` and the
request is audited like the main port's `/metrics` (`observability.ports`); it is not
counted in the request series.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import h11
from starlette.datastructures import Headers

from imageregistry.blobport.sockets import bind
from imageregistry.observability.endpoint import PATH, Scraper
from imageregistry.observability.ports import PortObserver

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
TIMEOUT = 30.0


@contextlib.asynccontextmanager
async def metrics_listener(
    listen: str, scraper: Scraper, observer: PortObserver
) -> AsyncIterator[None]:
    sock = bind(listen, reuse_port=True)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(TIMEOUT):
                await _answer(reader, writer, scraper, observer)
        except (OSError, TimeoutError, h11.ProtocolError):
            pass  # the scraper went away or sent what cannot be answered
        except Exception:
            log.exception("metrics_listen: a request failed")
        finally:
            writer.close()

    server = await asyncio.start_server(serve, sock=sock)
    log.info("metrics listening on %s", listen)
    try:
        yield
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait_closed()


async def _answer(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    scraper: Scraper,
    observer: PortObserver,
) -> None:
    http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(await reader.read(MAX_HEAD))
            continue
        break
    if not isinstance(event, h11.Request):
        return
    path = event.target.split(b"?", 1)[0]
    peer = writer.get_extra_info("peername")
    observed = observer.begin(event.method, path, event.headers, peer)
    status, failed = 500, True
    try:
        status, body, content_type, extra = await _scrape(event, path, peer, scraper)
        failed = False
    finally:
        observed.end(status, 0, b"" if failed or status < 400 else body, failed)
    head = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *extra.items(),
        ("X-Request-Id", observed.request_id),
    ]
    writer.write(http.send(h11.Response(status_code=status, headers=head)) or b"")
    if event.method != b"HEAD":
        writer.write(http.send(h11.Data(data=body)) or b"")
    writer.write(http.send(h11.EndOfMessage()) or b"")
    await writer.drain()


async def _scrape(
    event: h11.Request, path: bytes, peer: object, scraper: Scraper
) -> tuple[int, bytes, str, dict[str, str]]:
    if event.method not in (b"GET", b"HEAD") or path != PATH.encode():
        return 404, b"404 page not found\n", "text/plain", {}
    headers = Headers(raw=[(k.lower(), v) for k, v in event.headers])
    source = str(peer[0]) if isinstance(peer, tuple) else None
    answer = await scraper.answer(headers, source)
    return answer.status, answer.body, answer.content_type, dict(answer.headers)
