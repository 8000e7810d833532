"""Image API objects rendered from the typed registry tables, and the writes the API makes.

`Image` comes from a `manifests` row (+ its layers, index children and signatures),
`ImageStream` from a `repositories` row plus its tag history (`tag_events`, newest first),
`ImageStreamTag` / `ImageStreamImage` are views of those. What users may edit (labels,
annotations, ImageStream spec) lives in the rows' `user_data` JSON. Every write records a
change (resourceVersion, watch) under the same keys the data plane uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, delete, func, select, update

from imageregistry import apigroups
from imageregistry.clock import rfc3339
from imageregistry.metadata.db import record_change
from imageregistry.metadata.quota import check_reference
from imageregistry.metadata.registry import (
    IMAGES,
    IMAGESTREAMS,
    RepoKey,
    ensure_repository,
    insert_ignore,
    touch_repository,
)
from imageregistry.metadata.signatures import list_signatures
from imageregistry.metadata.tables import (
    manifest_blobs,
    manifest_children,
    manifests,
    repositories,
    repository_manifests,
    tag_events,
)
from imageregistry.metadata.tag_policies import (
    check_image_removal,
    check_move,
    check_rewrite,
    check_stream_removal,
    check_tag_removal,
    current_tags,
)

IMAGE_API = apigroups.IMAGE_V1
MANAGED = f"{apigroups.IMAGE}/managed"


def ts(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


def _user_meta(user_data: dict[str, Any]) -> dict[str, Any]:
    return {k: user_data[k] for k in ("labels", "annotations") if user_data.get(k)}


def image_reference(conn: Connection, host: str, digest: str) -> str:
    row = conn.execute(
        select(repositories.c.namespace, repositories.c.name)
        .join(repository_manifests, repository_manifests.c.repository_id == repositories.c.id)
        .where(repository_manifests.c.digest == digest)
        .order_by(repository_manifests.c.created)
        .limit(1)
    ).first()
    return f"{host}/{row.namespace}/{row.name}@{digest}" if row else digest


class StreamName(NamedTuple):
    namespace: str
    name: str


def streams_holding(conn: Connection, digest: str) -> list[StreamName]:
    """Every image stream whose repository holds manifest `digest`, by namespace and name."""
    rows = conn.execute(
        select(repositories.c.namespace, repositories.c.name)
        .join(repository_manifests, repository_manifests.c.repository_id == repositories.c.id)
        .where(repository_manifests.c.digest == digest)
        .order_by(repositories.c.namespace, repositories.c.name)
    )
    return [StreamName(namespace, name) for namespace, name in rows]


def _signatures(conn: Connection, digest: str) -> list[dict[str, Any]]:
    import base64

    out = []
    for sig in list_signatures(conn, digest):
        entry: dict[str, Any] = {
            "name": sig.name,
            "type": sig.type,
            "content": base64.b64encode(sig.content).decode(),
        }
        entry.update({"metadata": {"name": sig.name, "creationTimestamp": ts(sig.created)}})
        entry.update(dict(sig.status))
        out.append(entry)
    return out


def render_image(conn: Connection, row: Any, host: str, full: bool = True) -> dict[str, Any]:
    user = dict(row.user_data or {})
    meta: dict[str, Any] = {
        "name": row.digest,
        "uid": row.uid,
        "resourceVersion": str(row.resource_version),
        "creationTimestamp": ts(row.pushed),
        **_user_meta(user),
    }
    meta["annotations"] = {**meta.get("annotations", {}), MANAGED: "true"}
    layers = conn.execute(
        select(manifest_blobs.c.blob_digest, manifest_blobs.c.size, manifest_blobs.c.media_type)
        .where(manifest_blobs.c.manifest_digest == row.digest, manifest_blobs.c.position >= 0)
        .order_by(manifest_blobs.c.position)
    ).all()
    children = conn.execute(
        select(manifest_children)
        .where(manifest_children.c.parent_digest == row.digest)
        .order_by(manifest_children.c.position)
    ).all()
    obj: dict[str, Any] = {
        "kind": "Image",
        "apiVersion": IMAGE_API,
        "metadata": meta,
        "dockerImageReference": image_reference(conn, host, row.digest),
        "dockerImageMetadata": {
            "kind": "DockerImage",
            "apiVersion": "1.0",
            **dict(row.image_metadata or {}),
        },
        "dockerImageMetadataVersion": "1.0",
        "dockerImageLayers": [
            {"name": layer.blob_digest, "size": layer.size, "mediaType": layer.media_type}
            for layer in layers
        ],
        "dockerImageManifestMediaType": row.media_type,
    }
    if row.config_digest:
        obj["dockerImageMetadata"]["id"] = row.config_digest
    if children:
        obj["dockerImageManifests"] = [
            {
                "digest": c.child_digest,
                "mediaType": c.media_type,
                "manifestSize": c.size,
                "architecture": c.architecture or "",
                "os": c.os or "",
                "variant": c.variant or "",
            }
            for c in children
        ]
    if full:
        obj["dockerImageManifest"] = bytes(row.content).decode("utf-8", "replace")
    sigs = _signatures(conn, row.digest)
    if sigs:
        obj["signatures"] = sigs
    return obj


def get_image(conn: Connection, digest: str, host: str) -> dict[str, Any] | None:
    row = conn.execute(select(manifests).where(manifests.c.digest == digest)).first()
    return None if row is None else render_image(conn, row, host)


def list_images(
    conn: Connection, host: str, after: str = "", name: str | None = None
) -> Iterable[dict[str, Any]]:
    query = select(manifests).order_by(manifests.c.digest)
    if after:
        query = query.where(manifests.c.digest > after)
    if name is not None:
        query = query.where(manifests.c.digest == name)
    for row in conn.execute(query).all():
        yield render_image(conn, row, host, full=False)


def update_image_user_data(conn: Connection, digest: str, user_data: dict[str, Any]) -> int:
    rv = record_change(conn, IMAGES, "", digest, "MODIFIED")
    conn.execute(
        update(manifests)
        .where(manifests.c.digest == digest)
        .values(user_data=user_data, resource_version=rv)
    )
    return rv


def delete_image(conn: Connection, digest: str) -> bool:
    check_image_removal(conn, digest)  # ImageTagPolicy: no immutable tag may point at it
    result = conn.execute(delete(manifests).where(manifests.c.digest == digest))
    if result.rowcount == 0:
        return False
    conn.execute(delete(tag_events).where(tag_events.c.digest == digest))
    conn.execute(delete(repository_manifests).where(repository_manifests.c.digest == digest))
    record_change(conn, IMAGES, "", digest, "DELETED")
    return True


# --- streams ---------------------------------------------------------------------------


def tag_history(
    conn: Connection, repo_id: int, host: str, ns: str, name: str
) -> dict[str, list[dict[str, Any]]]:
    rows = conn.execute(
        select(tag_events)
        .where(tag_events.c.repository_id == repo_id)
        .order_by(tag_events.c.tag, tag_events.c.id.desc())
    ).all()
    tags: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        tags.setdefault(r.tag, []).append(
            {
                "created": ts(r.created),
                "dockerImageReference": f"{host}/{ns}/{name}@{r.digest}",
                "image": r.digest,
                "generation": r.generation,
            }
        )
    return tags


def render_stream(conn: Connection, row: Any, host: str) -> dict[str, Any]:
    user = dict(row.user_data or {})
    tags = tag_history(conn, row.id, host, row.namespace, row.name)
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


def stream_row(conn: Connection, namespace: str, name: str) -> Any:
    return conn.execute(
        select(repositories).where(
            repositories.c.namespace == namespace, repositories.c.name == name
        )
    ).first()


def list_stream_rows(conn: Connection, namespace: str) -> list[Any]:
    query = select(repositories).order_by(repositories.c.namespace, repositories.c.name)
    if namespace:
        query = query.where(repositories.c.namespace == namespace)
    return list(conn.execute(query).all())


def create_stream(
    conn: Connection, namespace: str, name: str, user_data: dict[str, Any], now: datetime
) -> None:
    repo_id = ensure_repository(conn, RepoKey(namespace, name), now, may_create_ns=False)
    conn.execute(
        update(repositories).where(repositories.c.id == repo_id).values(user_data=user_data)
    )


def update_stream_user_data(conn: Connection, row: Any, user_data: dict[str, Any]) -> None:
    generation = row.generation + (
        1 if (user_data.get("spec") != (row.user_data or {}).get("spec")) else 0
    )
    conn.execute(
        update(repositories)
        .where(repositories.c.id == row.id)
        .values(user_data=user_data, generation=generation)
    )
    touch_repository(conn, row.id, RepoKey(row.namespace, row.name))


def delete_stream(conn: Connection, row: Any) -> None:
    """Delete an image stream; refused while it holds a tag an ImageTagPolicy makes
    immutable (deleting the namespace, `delete_namespace_streams`, removes its policies
    with it and is not refused)."""
    check_stream_removal(conn, row.namespace, row.name, row.id)
    _drop_stream(conn, row)


def _drop_stream(conn: Connection, row: Any) -> None:
    conn.execute(delete(repositories).where(repositories.c.id == row.id))
    record_change(conn, IMAGESTREAMS, row.namespace, row.name, "DELETED")


def delete_namespace_streams(conn: Connection, namespace: str) -> None:
    for row in list_stream_rows(conn, namespace):
        _drop_stream(conn, row)


def delete_tag(conn: Connection, row: Any, tag: str) -> bool:
    if current_tag(conn, row.id, tag) is not None:
        check_tag_removal(conn, row.namespace, row.name, tag)  # ImageTagPolicy
    result = conn.execute(
        delete(tag_events).where(tag_events.c.repository_id == row.id, tag_events.c.tag == tag)
    )
    if result.rowcount == 0:
        return False
    touch_repository(conn, row.id, RepoKey(row.namespace, row.name))
    return True


def current_tag(conn: Connection, repo_id: int, tag: str) -> Any:
    newest = (
        select(func.max(tag_events.c.id))
        .where(tag_events.c.repository_id == repo_id, tag_events.c.tag == tag)
        .scalar_subquery()
    )
    return conn.execute(select(tag_events).where(tag_events.c.id == newest)).first()


def image_in_stream(conn: Connection, repo_id: int, digest: str) -> bool:
    row = conn.execute(
        select(repository_manifests.c.digest).where(
            repository_manifests.c.repository_id == repo_id, repository_manifests.c.digest == digest
        )
    ).first()
    return row is not None


def record_mapping(
    conn: Connection, namespace: str, stream: str, tag: str, digest: str, now: datetime
) -> None:
    """ImageStreamMapping: the stream is created if missing; the tag event is prepended unless
    the tag already points at the image (docs/behaviour.md#push-records-metadata)."""
    repo = RepoKey(namespace, stream)
    check_reference(conn, namespace, stream, digest, tag)  # quotas and limits
    repo_id = ensure_repository(conn, repo, now, may_create_ns=False)
    insert_ignore(
        conn, repository_manifests, {"repository_id": repo_id, "digest": digest, "created": now}
    )
    current = current_tag(conn, repo_id, tag)
    if current is not None and current.digest == digest:
        return
    check_move(conn, namespace, stream, tag, None if current is None else current.digest, digest)
    generation = conn.execute(
        select(repositories.c.generation).where(repositories.c.id == repo_id)
    ).scalar_one()
    conn.execute(
        tag_events.insert().values(
            repository_id=repo_id, tag=tag, digest=digest, created=now, generation=generation
        )
    )
    touch_repository(conn, repo_id, repo)


def tag_event_rows(conn: Connection, repo_id: int) -> list[Any]:
    """Every tag event of a stream: by tag, newest first (what `status.tags` renders)."""
    return list(
        conn.execute(
            select(tag_events)
            .where(tag_events.c.repository_id == repo_id)
            .order_by(tag_events.c.tag, tag_events.c.id.desc())
        ).all()
    )


def delete_tag_events(conn: Connection, repo_id: int, ids: Iterable[int]) -> int:
    """Remove history items of one stream (the caller records the stream change)."""
    wanted = list(ids)
    if not wanted:
        return 0
    result = conn.execute(
        delete(tag_events).where(tag_events.c.repository_id == repo_id, tag_events.c.id.in_(wanted))
    )
    return int(result.rowcount or 0)


def image_exists(conn: Connection, digest: str) -> bool:
    return (
        conn.execute(select(manifests.c.digest).where(manifests.c.digest == digest)).first()
        is not None
    )


def rewrite_history(
    conn: Connection,
    row: Any,
    delete_ids: Iterable[int],
    new_current: Iterable[tuple[str, str]],
    now: datetime,
) -> None:
    """Apply an `imagestreams/status` update: drop events, then put new current images on top.
    Refused (by the ImageTagPolicy check, after the fact, in the same transaction) when an
    immutable tag ends up pointing elsewhere or gone; dropping its older items is fine."""
    before = current_tags(conn, row.id)
    if delete_tag_events(conn, row.id, delete_ids):
        touch_repository(conn, row.id, RepoKey(row.namespace, row.name))
    for tag, digest in new_current:
        record_mapping(conn, row.namespace, row.name, tag, digest, now)
    check_rewrite(conn, row.namespace, row.name, before, current_tags(conn, row.id))
