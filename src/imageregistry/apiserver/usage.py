"""Usage endpoints behind `ac adm top`: one request answers the whole report.

`GET /apis/image.alauda.io/v1/imageusages` and `.../imagestreamusages` (and the
namespace-scoped `/namespaces/NS/...` variants) return a list whose items are computed by
`metadata.usage` with set-based SQL (image items are arrays; the head names the columns).
The body is streamed with one item per line, so the server never holds the JSON of 100,000
images in memory and the client can parse it as it arrives. Access, declared by the routes
in `api_routes.py`: the cluster-wide report needs `list images`; a namespace report needs
`list imagestreams` in that namespace (docs/behaviour.md#bootstrap-roles).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from json.encoder import encode_basestring_ascii as quote

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from imageregistry.auth.authorizer import IMAGE_GROUP
from imageregistry.metadata.db import Database
from imageregistry.metadata.usage import ImageUsage, StreamUsage, image_usage, stream_usage
from imageregistry.tuning.collector import collector_paused

API_VERSION = f"{IMAGE_GROUP}/v1"
_BATCH = 1000


def _time(value: datetime | None) -> str:
    """RFC 3339 UTC to the second, quoted; `isoformat` is several times faster than
    `strftime` and its first 19 characters are the same digits."""
    if value is None:
        return "null"
    return f'"{value.isoformat(timespec="seconds")[:19]}Z"'


IMAGE_COLUMNS = (
    "name",
    "imageStreamTags",
    "parents",
    "lastPulled",
    "metadata",
    "storage",
    "layers",
)


def image_line(row: ImageUsage) -> str:
    """One ImageUsage item as a compact JSON array in the order of `IMAGE_COLUMNS`.

    An array per row rather than an object: the keys were a third of a 30 MB report and of
    the client's parse time. The List head names the columns, and each `imageStreamTags`
    entry is `[namespace, stream, [tags]]`. Written by hand rather than through
    `json.dumps`; strings still go through the stdlib's JSON string encoder, so escaping is
    exactly `json.dumps`'s.
    """
    streams = ",".join(
        f"[{quote(s.namespace)},{quote(s.stream)},[{','.join(map(quote, s.tags))}]]"
        for s in row.streams
    )
    return (
        f"[{quote(row.name)},[{streams}],[{','.join(map(quote, row.parents))}],"
        f"{_time(row.last_pulled)},{'true' if row.metadata else 'false'},"
        f"{row.storage},{row.layers}]"
    )


def stream_line(row: StreamUsage) -> str:
    item = {
        "namespace": row.namespace,
        "name": row.name,
        "storage": row.storage,
        "images": row.images,
        "layers": row.layers,
    }
    return json.dumps(item, separators=(",", ":"))


def stream_list(
    kind: str,
    lines: Iterable[str],
    total: int | None = None,
    columns: tuple[str, ...] | None = None,
) -> Iterator[bytes]:
    """A Kubernetes-style List written one item per line (clients may parse by line).

    Every item line after the first starts with the separating comma, so a client can
    collect any run of lines, drop the first comma and parse them as one JSON array.
    `total` (the item count, for progress bars) is written in the head when known;
    `columns` names the fields when items are arrays rather than objects.
    """
    head: dict[str, object] = {"kind": kind, "apiVersion": API_VERSION, "metadata": {}}
    if total is not None:
        head["total"] = total
    if columns is not None:
        head["columns"] = list(columns)
    yield (json.dumps(head, separators=(",", ":"))[:-1] + ',"items":[\n').encode()
    source = iter(lines)
    first = True
    while True:
        with collector_paused():  # per batch: never across the yield (tuning/collector.py)
            batch = list(islice(source, _BATCH))
            if batch and not first:
                batch[0] = "," + batch[0]
            chunk = ("\n,".join(batch) + "\n").encode() if batch else b""
        if not batch:
            break
        first = False
        yield chunk
    yield b"]}\n"


class UsageReports:
    """The handlers of the usage routes. The dispatcher has authenticated the caller, applied
    any impersonation, and authorized the route's action before they run, exactly as for
    every other API request (`api_routes.py`). So `--as` works and a denial is the standard
    Status."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def images(self, namespace: str) -> Response:
        def body() -> Iterator[bytes]:
            # Runs in Starlette's thread pool (a synchronous body): the queries finish and
            # the connection closes before the first item line is written.
            with self.db.read() as conn, collector_paused():
                rows = image_usage(conn, namespace or None)
            lines = map(image_line, rows)
            yield from stream_list("ImageUsageList", lines, len(rows), IMAGE_COLUMNS)

        return StreamingResponse(body(), media_type="application/json")

    async def streams(self, namespace: str) -> Response:
        def rows() -> list[StreamUsage]:
            with self.db.read() as conn, collector_paused():
                return stream_usage(conn, namespace or None)

        found = await run_in_threadpool(rows)
        return StreamingResponse(
            stream_list("ImageStreamUsageList", map(stream_line, found), len(found)),
            media_type="application/json",
        )
