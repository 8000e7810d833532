"""Image and ImageStream objects rendered from the image API's typed rows.

`metadata/images.py` reads an image as an `ImageRecord` and a stream as a `StreamRow` plus
its tag events; this module gives them their Kubernetes shape (the `image.alauda.io/v1`
kinds, `metav1` metadata, pull references under the registry's host). The other image
views (ImageStreamTag, ImageStreamImage, ImageStreamLayers) are built from these objects.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from imageregistry import apigroups
from imageregistry.clock import rfc3339
from imageregistry.metadata import images as q
from imageregistry.metadata.signatures import SignatureRecord

IMAGE_API = apigroups.IMAGE_V1
MANAGED = f"{apigroups.IMAGE}/managed"


def ts(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


def _user_meta(user_data: dict[str, Any]) -> dict[str, Any]:
    return {k: user_data[k] for k in ("labels", "annotations") if user_data.get(k)}


def _signature(sig: SignatureRecord) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": sig.name,
        "type": sig.type,
        "content": base64.b64encode(sig.content).decode(),
    }
    entry.update({"metadata": {"name": sig.name, "creationTimestamp": ts(sig.created)}})
    entry.update(dict(sig.status))
    return entry


def render_image(image: q.ImageRecord, host: str, full: bool = True) -> dict[str, Any]:
    """The Image object; `full` adds the manifest itself (`dockerImageManifest`), which a
    list leaves out."""
    meta: dict[str, Any] = {
        "name": image.digest,
        "uid": image.uid,
        "resourceVersion": str(image.resource_version),
        "creationTimestamp": ts(image.pushed),
        **_user_meta(image.user_data),
    }
    meta["annotations"] = {**meta.get("annotations", {}), MANAGED: "true"}
    stream = image.first_stream
    reference = (
        f"{host}/{stream.namespace}/{stream.name}@{image.digest}" if stream else image.digest
    )
    obj: dict[str, Any] = {
        "kind": "Image",
        "apiVersion": IMAGE_API,
        "metadata": meta,
        "dockerImageReference": reference,
        "dockerImageMetadata": {
            "kind": "DockerImage",
            "apiVersion": "1.0",
            **image.image_metadata,
        },
        "dockerImageMetadataVersion": "1.0",
        "dockerImageLayers": [
            {"name": layer.digest, "size": layer.size, "mediaType": layer.media_type}
            for layer in image.layers
        ],
        "dockerImageManifestMediaType": image.media_type,
    }
    if image.config_digest:
        obj["dockerImageMetadata"]["id"] = image.config_digest
    if image.children:
        obj["dockerImageManifests"] = [
            {
                "digest": c.digest,
                "mediaType": c.media_type,
                "manifestSize": c.size,
                "architecture": c.architecture or "",
                "os": c.os or "",
                "variant": c.variant or "",
            }
            for c in image.children
        ]
    if full:
        obj["dockerImageManifest"] = image.content.decode("utf-8", "replace")
    if image.signatures:
        obj["signatures"] = [_signature(sig) for sig in image.signatures]
    return obj


def get_image(conn: Connection, digest: str, host: str) -> dict[str, Any] | None:
    image = q.find_image(conn, digest)
    return None if image is None else render_image(image, host)


def list_images(conn: Connection, host: str) -> Iterator[dict[str, Any]]:
    """Every Image by name, without manifests, rendered as the caller iterates."""
    for image in q.iter_images(conn):
        yield render_image(image, host, full=False)


def tag_history(
    events: Sequence[q.TagEventRow], host: str, ns: str, name: str
) -> dict[str, list[dict[str, Any]]]:
    """`status.tags` items by tag, from `metadata.images.tag_event_rows` (newest first)."""
    tags: dict[str, list[dict[str, Any]]] = {}
    for r in events:
        tags.setdefault(r.tag, []).append(
            {
                "created": ts(r.created),
                "dockerImageReference": f"{host}/{ns}/{name}@{r.digest}",
                "image": r.digest,
                "generation": r.generation,
            }
        )
    return tags


def stream_history(
    conn: Connection, row: q.StreamRow, host: str
) -> dict[str, list[dict[str, Any]]]:
    return tag_history(q.tag_event_rows(conn, row.id), host, row.namespace, row.name)


def render_stream(conn: Connection, row: q.StreamRow, host: str) -> dict[str, Any]:
    """The ImageStream object: the stream's row and its tag history."""
    user = dict(row.user_data or {})
    tags = stream_history(conn, row, host)
    spec = dict(user.get("spec") or {})
    spec.setdefault("lookupPolicy", {"local": False})
    return {
        "kind": "ImageStream",
        "apiVersion": IMAGE_API,
        "metadata": {
            "name": row.name,
            "namespace": row.namespace,
            "uid": row.uid,
            "resourceVersion": str(row.resource_version),
            "generation": row.generation,
            "creationTimestamp": ts(row.created),
            **_user_meta(user),
        },
        "spec": spec,
        "status": {
            "dockerImageRepository": f"{host}/{row.namespace}/{row.name}",
            "tags": [{"tag": t, "items": items} for t, items in sorted(tags.items())],
        },
    }
