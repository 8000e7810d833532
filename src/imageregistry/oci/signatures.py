"""The registry signature extension that `skopeo copy --sign-by` speaks
(docs/behaviour.md#signatures).

containers/image stores "atomic" signatures in the registry itself when the `/v2/` ping
answers `X-Registry-Supports-Signatures: 1` (`SignatureHeaderMiddleware` adds it to every
`/v2/` and `/extensions/v2/` response); it then GETs
`/extensions/v2/<ns>/<stream>/signatures/<digest>` on every push *and pull*, so an image
without signatures must answer 200 `{"signatures":[]}` from one indexed query, and PUTs
`{"schemaVersion":2,"name":"<digest>@<32 hex>","type":"atomic","content":"<base64>"}`
expecting 201 (409 when the same content is already stored, 400 when the entry is
malformed). GET is authorized as a pull of the stream, PUT as `create imagesignatures` in
the namespace, through the same gate as the rest of the registry; the image must be linked
to the repository named in the path. The route table and its dispatcher, which authorizes
before these handlers run, are `oci.extension_routes`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageregistry.clock import Clock
from imageregistry.httpinput import InvalidJSON, load_json, read_body
from imageregistry.metadata import signatures as sigdb
from imageregistry.metadata.db import Database
from imageregistry.metadata.registry import RepoKey
from imageregistry.oci.context import Ctx
from imageregistry.oci.errors import RegistryError
from imageregistry.oci.pull import SUPPORTS_SIGNATURES_HEADER

SUPPORTS_HEADER = SUPPORTS_SIGNATURES_HEADER
SCHEMA_VERSION = 2
ATOMIC = "atomic"
MAX_BODY_BYTES = 1 << 20  # a signature is a few hundred bytes; refuse anything absurd


class SignatureHeaderMiddleware:
    """Pure ASGI middleware: advertise the extension on every `/v2/` and `/extensions/v2/`
    response, and nothing else.

    Written as raw ASGI (not `BaseHTTPMiddleware`) so streamed blob responses are not
    buffered or delayed. Manifest pulls answered on the event loop
    (`oci.inline_pull.InlinePullLayer`, in front of this layer) carry the header already.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == "/v2" or path.startswith(("/v2/", "/extensions/v2/"))):
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), SUPPORTS_HEADER]}
            await send(message)

        await self.app(scope, receive, send_with_header)


def _entry(name: str, sig_type: str, content: bytes) -> dict[str, Any]:
    return {
        "schemaVersion": SCHEMA_VERSION,
        "name": name,
        "type": sig_type,
        "content": base64.b64encode(content).decode(),
    }


def _bad(message: str) -> RegistryError:
    return RegistryError("SIGNATURE_INVALID", message, status=400)


def parse_entry(body: bytes, digest: str) -> tuple[str, str, bytes]:
    """Validate a PUT body for *digest*; return `(name, type, content)` or raise 400."""
    try:
        doc = load_json(body)
    except InvalidJSON as exc:  # malformed, hostile nesting, numbers out of bounds
        raise _bad(f"signature is not valid JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise _bad("signature must be a JSON object")
    if doc.get("schemaVersion") != SCHEMA_VERSION:
        raise _bad(f"schemaVersion must be {SCHEMA_VERSION}")
    name, sig_type, content_b64 = doc.get("name"), doc.get("type"), doc.get("content")
    if not isinstance(name, str):
        raise _bad("name must be a string <image digest>@<signature name>")
    try:
        image, _suffix = sigdb.split_name(name)
    except sigdb.InvalidSignatureName as exc:
        raise _bad(str(exc)) from None
    if image != digest:
        raise _bad(f"signature name {name!r} is not for image {digest}")
    if sig_type != ATOMIC:
        raise _bad(f"type must be {ATOMIC!r}, not {sig_type!r}")
    if not isinstance(content_b64, str) or not content_b64:
        raise _bad("content must be non-empty base64")
    try:
        content = base64.b64decode(content_b64, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("content is not valid base64") from None
    if not content:
        raise _bad("content must be non-empty base64")
    return name, sig_type, content


async def get_signatures(ctx: Ctx) -> Response:
    """GET/HEAD: the image's atomic signatures; 404 when the image is not in the repository."""
    found = await ctx.run(_list, ctx.registry.db, ctx.repo, ctx.arg)
    if found is None:
        raise RegistryError("MANIFEST_UNKNOWN", f"image {ctx.arg} not found in {ctx.repo}")
    # Only atomic entries: containers/image cannot use other types from this API.
    entries = [_entry(n, t, c) for n, t, c in found if t == ATOMIC]
    return JSONResponse({"signatures": entries})


async def put_signature(ctx: Ctx) -> Response:
    """PUT: store one signature entry for the image (201; 409 when already stored)."""
    body = await read_body(ctx.request, MAX_BODY_BYTES)  # 413 SIZE_INVALID above it
    name, sig_type, content = parse_entry(body, ctx.arg)
    registry = ctx.registry
    await ctx.run(_store, registry.db, registry.clock, ctx.repo, ctx.arg, name, sig_type, content)
    return Response(status_code=201)


def _list(db: Database, repo: RepoKey, digest: str) -> list[tuple[str, str, bytes]] | None:
    with db.read() as conn:
        if not sigdb.image_in_repository(conn, repo.namespace, repo.name, digest):
            return None
        return sigdb.list_for_extension(conn, digest)


def _store(
    db: Database,
    clock: Clock,
    repo: RepoKey,
    digest: str,
    name: str,
    sig_type: str,
    content: bytes,
) -> None:
    with db.write() as conn:
        if not sigdb.image_in_repository(conn, repo.namespace, repo.name, digest):
            raise RegistryError("MANIFEST_UNKNOWN", f"image {digest} not found in {repo}")
        try:
            sigdb.add_signature(conn, name, sig_type, content, clock())
        except sigdb.SignatureLimitExceeded as exc:  # keep the list readable by pullers
            raise RegistryError("DENIED", str(exc), status=413) from None
        except sigdb.SignatureConflict as exc:
            raise RegistryError("SIGNATURE_EXISTS", str(exc), status=409) from None
        except sigdb.ImageNotFound as exc:
            raise RegistryError("MANIFEST_UNKNOWN", str(exc)) from None
