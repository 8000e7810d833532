"""The one check every API path runs before it makes an image stream reference an image.

Whoever may read a stream sees everything about the images it references: the Image
metadata (config summary, layers) through ImageStreamTag/ImageStreamImage and the manifest
through `/v2/`. So adding an image to a stream publishes it to that stream's readers, and
is allowed only to a caller who could read the image already. Every path that adds one calls
`require_image_access`: `imagestreams/status` writes (a new current item), ImageStreamTag
create/update (`tag.from`), ImageStreamMapping, and prune undo. Nothing is imported from
other registries, so there is no fourth source.

The caller may add the image when one of these holds:

- the target stream already references it (re-pointing a tag adds nothing new);
- they may `get images` cluster-wide (they can read every Image object already);
- they may pull (`get imagestreams/layers`) from where the image comes from: the stream a
  reference names (`tag.from`, the stream an undo restores), or, when nothing is named
  (a digest in a status item or a mapping), any stream holding the image.

An image that does not exist gets the same 403 as one the caller may not read, so the check
cannot be used to probe another namespace for digests. This is an admission step
(`apiserver/admission.py`): it runs after the dispatcher has authorized the request itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from imageregistry import apigroups
from imageregistry.apiserver.resource import RequestContext
from imageregistry.apiserver.status import forbidden
from imageregistry.metadata.images import streams_holding

GROUP = apigroups.IMAGE


@dataclass(frozen=True)
class StreamKey:
    namespace: str
    stream: str


def _holders(conn: Connection, digest: str) -> list[StreamKey]:
    return [StreamKey(ns, name) for ns, name in streams_holding(conn, digest)]


def _may_pull(ctx: RequestContext, source: StreamKey) -> bool:
    return ctx.admission_allows(
        "get",
        GROUP,
        "imagestreams",
        subresource="layers",
        name=source.stream,
        namespace=source.namespace,
    )


def may_reference(
    ctx: RequestContext,
    conn: Connection,
    target: StreamKey,
    digest: str | None,
    sources: Sequence[StreamKey] | None,
) -> bool:
    """Whether the caller may make `target` reference `digest` (module docstring).

    `sources` are the streams the image is read from; None means "wherever it is held".
    `digest` may be None when the reference could not be resolved: then only access to the
    named sources counts (the answer must not depend on what exists there)."""
    if digest is not None and target in _holders(conn, digest):
        return True
    if ctx.admission_allows("get", GROUP, "images"):
        return True
    if sources is None:
        sources = _holders(conn, digest) if digest is not None else []
    return any(_may_pull(ctx, source) for source in sources)


def require_image_access(
    ctx: RequestContext,
    conn: Connection,
    target: StreamKey,
    digest: str | None,
    sources: Sequence[StreamKey] | None,
    *,
    resource: str,
    name: str,
) -> None:
    """`may_reference`, or 403 on `resource`/`name` saying which pull right is missing."""
    if may_reference(ctx, conn, target, digest, sources):
        return
    user = ctx.user.username
    if sources is not None and len(sources) == 1:
        where = (
            f'cannot get resource "imagestreams/layers" in API group "{GROUP}" in the '
            f'namespace "{sources[0].namespace}"'
        )
    else:
        where = (
            f'cannot get resource "imagestreams/layers" in API group "{GROUP}" for any image '
            f'stream holding image "{digest}"'
        )
    raise forbidden(resource, GROUP, name, f'User "{user}" {where}')
