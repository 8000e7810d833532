"""Manifest GET/HEAD, PUT and DELETE, by tag or by digest.

Manifests and tags are served only from the metadata (docs/behaviour.md#the-pieces), byte-exact with
the stored `Content-Type` and `Docker-Content-Digest`. PUT accepts manifests up to 4 MiB
(the spec's minimum a registry must accept; larger → 413 `SIZE_INVALID`), verifies a
digest reference against the body, and answers `OCI-Subject` when the manifest has a
subject, even if that subject is not (yet) in the registry.

DELETE by tag removes the tag and its history (ImageStreamTag delete). DELETE by digest
removes the image from the stream as the OCI distribution spec says, with every tag
history item of the stream pointing at it (skopeo, oras and the conformance suite resolve
a tag and delete by digest); the deletion is recorded as a prune run whose id the answer
carries in `RUN_HEADER`, for `ac adm prune images --undo RUN` (docs/operations.md).
"""

from __future__ import annotations

from starlette.responses import Response

from imageregistry.auth.authorizer import RegistryAction
from imageregistry.content.digest import digest_of
from imageregistry.content.manifest import parse_manifest
from imageregistry.content.reference import parse_manifest_reference
from imageregistry.httpinput import BodyTooLarge, read_body
from imageregistry.oci import notify
from imageregistry.oci.conditional import digest_etag, etag_matches
from imageregistry.oci.context import Ctx
from imageregistry.oci.errors import RegistryError
from imageregistry.oci.pull import Refused

MAX_MANIFEST_BYTES = 4 << 20
RUN_HEADER = "X-Registry-Prune-Run"


async def get_manifest(ctx: Ctx) -> Response:
    """Render what the one pull decision (`oci.pull.ManifestPull.pull`, run by the
    dispatcher for the route's `PullReview`) answered: the manifest, or why there is none.

    A reference that is neither a tag nor a digest names no manifest: after the usual
    authorization it is `404 MANIFEST_UNKNOWN`, as the OCI conformance suite expects (a
    PUT with such a reference is still refused as invalid)."""
    pulled = ctx.pulled
    if pulled is None:
        raise RegistryError("MANIFEST_UNKNOWN", f"{ctx.arg[:140]!r} is neither a tag nor a digest")
    if isinstance(pulled, Refused):
        raise pulled.error or RegistryError("MANIFEST_UNKNOWN")
    tag = parse_manifest_reference(ctx.arg).tag
    etag = digest_etag(pulled.digest)
    headers = {"Docker-Content-Digest": pulled.digest, "ETag": etag}
    if etag_matches(ctx.request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    notify.manifest_pulled(  # GET and HEAD, as distribution reports them
        ctx.registry.notifier,
        ctx.request.scope,
        ctx.user,
        ctx.repo,
        pulled.digest,
        pulled.media_type,
        len(pulled.content),
        tag,
    )
    headers["Content-Length"] = str(len(pulled.content))
    body = b"" if ctx.is_head else pulled.content
    return Response(body, headers=headers, media_type=pulled.media_type)


async def _read_body(ctx: Ctx) -> bytes:
    try:
        return await read_body(ctx.request, MAX_MANIFEST_BYTES)
    except BodyTooLarge:
        raise RegistryError(
            "SIZE_INVALID", f"manifest is larger than {MAX_MANIFEST_BYTES} bytes", status=413
        ) from None


async def put_manifest(ctx: Ctx) -> Response:
    ref = parse_manifest_reference(ctx.arg)
    body = await _read_body(ctx)
    if ref.digest is not None:
        actual = digest_of(body, ref.digest.algorithm)
        if actual != ref.digest:
            raise RegistryError("DIGEST_INVALID", f"manifest digest is {actual}, not {ref.digest}")
        digest = ref.digest
    else:
        digest = digest_of(body)
    parsed = parse_manifest(body, ctx.request.headers.get("content-type"))
    notifier = ctx.registry.notifier
    emit = notify.manifest_pushed(
        notifier,
        ctx.request.scope,
        ctx.user,
        ctx.repo,
        str(digest),
        parsed.media_type,
        len(body),
        ref.tag,
    )
    await notify.settle_pulls(notifier)
    await ctx.registry.pusher.push(
        ctx.repo,
        digest,
        parsed,
        body,
        ref.tag,
        ctx.registry.now(),
        ctx.may_create_namespace,
        lambda: ctx.also_allowed(RegistryAction.SIGN, ctx.repo),
        emit,
    )
    if notifier is not None:
        notifier.committed()
    headers = {
        "Location": f"/v2/{ctx.repo}/manifests/{digest}",
        "Docker-Content-Digest": str(digest),
        "Content-Length": "0",
    }
    if parsed.subject is not None:
        headers["OCI-Subject"] = str(parsed.subject.digest)
    return Response(status_code=201, headers=headers)


async def delete_manifest(ctx: Ctx) -> Response:
    """By tag or by digest: the dispatcher reviewed the one the reference names
    (`ReviewByReference`)."""
    ref = parse_manifest_reference(ctx.arg)
    headers = {"Content-Length": "0"}
    notifier, scope = ctx.registry.notifier, ctx.request.scope
    await notify.settle_pulls(notifier)
    if ref.tag is not None:
        emit = notify.deleted(notifier, scope, ctx.user, ctx.repo, tag=ref.tag)
        await ctx.run(ctx.registry.meta.delete_tag, ctx.repo, ref.tag, emit)
    else:
        deleted = await ctx.run(
            ctx.registry.manifests.delete,
            ctx.repo,
            str(ref.digest),
            ctx.user.username,
            ctx.registry.now(),
            notify.manifest_deleted(notifier, scope, ctx.user, ctx.repo),
        )
        headers[RUN_HEADER] = deleted.run_id
    if notifier is not None:
        notifier.committed()
    return Response(status_code=202, headers=headers)
