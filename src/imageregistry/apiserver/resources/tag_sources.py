"""Where an ImageStreamTag written through the API points: its `tag.from` reference.

`tag: {from: {kind, name, namespace?}}` names the image the tag should now show, as
OpenShift's spec tag references do: `ImageStreamTag` (`stream:tag`, its current image),
`ImageStreamImage` (`stream@sha256:...`, an image of that stream) or `DockerImage`
(`host/ns/stream:tag` or `host/ns/stream@digest` on this registry). Only images this registry
stores can be tagged (nothing is imported). The source must be pullable by the caller
(`image_access.require_image_access`, in any namespace), so tagging cannot copy images out of
streams the caller could not pull from.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection

from imageregistry import apigroups
from imageregistry.apiserver.resource import RequestContext
from imageregistry.apiserver.resources.image_access import StreamKey, require_image_access
from imageregistry.apiserver.status import (
    ApiError,
    FieldCause,
    conflict,
    invalid,
    not_found,
)
from imageregistry.content.reference import is_stream_name, is_tag
from imageregistry.metadata import images as q

GROUP = apigroups.IMAGE
DIGEST = re.compile(r"^sha(256|512):[a-f0-9]{64,128}\Z")


def _invalid(name: str, field: str, message: str) -> ApiError:
    return invalid("ImageStreamTag", GROUP, name, [FieldCause(field, f"Invalid value: {message}")])


def split_tag_name(name: str) -> tuple[str, str]:
    """`stream:tag` → (stream, tag), 422 when either part is not a valid name."""
    stream, _, tag = name.partition(":")
    if not is_stream_name(stream) or not is_tag(tag):
        raise _invalid(name, "metadata.name", f'"{name}": must be <stream>:<tag>')
    return stream, tag


def check_resource_version(body: dict[str, Any], current: str, name: str) -> None:
    given = (body.get("metadata") or {}).get("resourceVersion")
    if given and str(given) != current:
        raise conflict(
            "imagestreamtags",
            GROUP,
            name,
            "the object has been modified; please apply your changes to the latest version "
            "and try again",
        )


def _split_docker(reference: str, host: str, name: str) -> tuple[str, str, str, str]:
    """`host/ns/stream(:tag|@digest)` on this registry → (namespace, stream, tag, digest)."""
    path, _, digest = reference.partition("@")
    tag = ""
    slash = path.rfind("/")
    if not digest and ":" in path[slash + 1 :]:
        path, _, tag = path.rpartition(":")
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == host:
        parts = parts[1:]
    if len(parts) != 2 or not (tag or digest):
        raise _invalid(
            name,
            "tag.from.name",
            f'"{reference}": only {host}/<namespace>/<stream>:<tag> or @<digest> references '
            "to images stored in this registry can be tagged",
        )
    return parts[0], parts[1], tag, digest


def _source(
    kind: Any, ref_name: str, namespace: str, host: str, name: str
) -> tuple[str, str, str, str]:
    """(namespace, stream, tag, digest) of a `from` reference."""
    if kind == "ImageStreamTag":
        stream, _, tag = ref_name.partition(":")
        if stream and tag:
            return namespace, stream, tag, ""
    elif kind == "ImageStreamImage":
        stream, _, digest = ref_name.partition("@")
        if stream and DIGEST.match(digest):
            return namespace, stream, "", digest
    elif kind == "DockerImage":
        return _split_docker(ref_name, host, name)
    else:
        raise _invalid(
            name,
            "tag.from.kind",
            f'"{kind}": must be ImageStreamTag, ImageStreamImage or DockerImage',
        )
    raise _invalid(name, "tag.from.name", f'"{ref_name}": not a valid {kind} name')


def resolve_tag_source(
    ctx: RequestContext,
    conn: Connection,
    host: str,
    target: StreamKey,
    name: str,
    tag_ref: Any,
) -> str | None:
    """The digest `tag.from` points at; None when the body names no source. The caller must
    be able to pull from the source stream (`image_access`), in any namespace: 403 before
    404, so the answer does not tell what a stream the caller cannot read holds."""
    if tag_ref is None or (isinstance(tag_ref, dict) and tag_ref.get("from") is None):
        return None
    ref = tag_ref.get("from") if isinstance(tag_ref, dict) else None
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
        raise _invalid(name, "tag.from", "must be an object with kind and name")
    source_ns = str(ref.get("namespace") or target.namespace)
    ns, stream, tag, digest = _source(ref.get("kind"), ref["name"], source_ns, host, name)
    row = q.stream_row(conn, ns, stream)
    found: str | None = None
    if row is not None and tag:
        event = q.current_tag(conn, row.id, tag)
        found = None if event is None else str(event.digest)
    elif row is not None and q.image_in_stream(conn, row.id, digest):
        found = digest
    require_image_access(
        ctx, conn, target, found, [StreamKey(ns, stream)], resource="imagestreamtags", name=name
    )
    if found is None and tag:
        raise not_found("imagestreamtags", GROUP, f"{stream}:{tag}")
    if found is None:
        raise not_found("imagestreamimages", GROUP, f"{stream}@{digest}")
    return found
