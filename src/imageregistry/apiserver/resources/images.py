"""`image.alauda.io/v1` Image, ImageStream, ImageStreamTag, ImageStreamImage, ImageStreamMapping.

These are views of the typed registry tables (`metadata.images`), not rows of the generic
object store: an ImageStream is a repository with its tag history, an ImageStreamTag is a
tag's current item, an ImageStreamImage an image as seen in a stream. Users may edit labels,
annotations and the ImageStream spec; everything else is the registry's. Table columns are
those of docs/behaviour.md#image-api-resources.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from imageregistry import apigroups
from imageregistry.apiserver.codec import ANY, object_schema
from imageregistry.apiserver.imagetagpolicy import refused_as_forbidden
from imageregistry.apiserver.resource import (
    ListOptions,
    ListResult,
    RequestContext,
    ResourceHandler,
    ResourceInfo,
)
from imageregistry.apiserver.resources import image_objects
from imageregistry.apiserver.resources.image_access import StreamKey, require_image_access
from imageregistry.apiserver.resources.stream_status import TagEvent, plan_status
from imageregistry.apiserver.selectors import field_predicate, label_predicate
from imageregistry.apiserver.status import (
    FieldCause,
    already_exists,
    conflict,
    invalid,
    method_not_allowed,
    not_found,
)
from imageregistry.apiserver.store import (
    current_resource_version,
    decode_continue,
    encode_continue,
)
from imageregistry.apiserver.tables import NAME_COLUMN, Column, age
from imageregistry.apiserver.validation import label_causes
from imageregistry.content.reference import is_stream_name
from imageregistry.metadata import images as q
from imageregistry.metadata import signatures as sigs
from imageregistry.metadata import tag_policies as tp
from imageregistry.metadata.db import Database
from imageregistry.metadata.namespaces import namespace_exists
from imageregistry.metadata.registry import IMAGES, IMAGESTREAMS
from imageregistry.signatures.verify import drop_revoked_trust, validate_signature_object

GROUP = apigroups.IMAGE
Filter = Callable[[dict[str, Any]], bool]


def _filters(opts: ListOptions) -> list[Filter]:
    out: list[Filter] = []
    if opts.label_selector:
        out.append(label_predicate(opts.label_selector))
    if opts.field_selector:
        out.append(field_predicate(opts.field_selector))
    return out


def _page(objs: Iterable[dict[str, Any]], opts: ListOptions, rv: str) -> ListResult:
    filters = _filters(opts)
    after = decode_continue(opts.continue_token) if opts.continue_token else None
    items: list[dict[str, Any]] = []
    token = ""
    for obj in objs:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if after is not None and key <= after:
            continue
        if not all(f(obj) for f in filters):
            continue
        if opts.limit and len(items) == opts.limit:
            last = items[-1]["metadata"]
            token = encode_continue(last.get("namespace", ""), last["name"])
            break
        items.append(obj)
    return ListResult(items, rv, token)


def _check_rv(given: Any, current: str, plural: str, name: str) -> None:
    if given and str(given) != current:
        raise conflict(
            plural,
            GROUP,
            name,
            "the object has been modified; please apply your changes to the latest version "
            "and try again",
        )


def _stream_for_update(
    conn: Connection, namespace: str, name: str, body: dict[str, Any]
) -> q.StreamRow:
    """The stream's row, inside the caller's write transaction: 404 when missing, 409 when
    the body carries a stale resourceVersion."""
    row = q.stream_row(conn, namespace, name)
    if row is None:
        raise not_found("imagestreams", GROUP, name)
    given = (body.get("metadata") or {}).get("resourceVersion")
    _check_rv(given, str(row.resource_version), "imagestreams", name)
    return row


def _user_data(body: dict[str, Any], keep_spec: bool) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    out: dict[str, Any] = {}
    causes = label_causes(meta)
    if causes:
        raise invalid(body.get("kind", ""), GROUP, str(meta.get("name", "")), causes)
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value:
            out[key] = value
    if keep_spec and isinstance(body.get("spec"), dict):
        out["spec"] = body["spec"]
    return out


def _verified(image: dict[str, Any]) -> str:
    for signature in image.get("signatures") or ():
        for condition in signature.get("conditions") or ():
            if condition.get("type") == "Trusted" and condition.get("status") == "True":
                return "yes"
    return "no"


def _without_revoked_trust(entries: Any, current: Any) -> Any:
    """The edited `signatures`, where taking a stored signature's Trusted condition away
    also clears what only a verification set (`signatures.verify.drop_revoked_trust`)."""
    if not isinstance(entries, list) or not isinstance(current, list):
        return entries
    stored = {s.get("name"): s for s in current if isinstance(s, dict)}
    out = []
    for entry in entries:
        name = None
        if isinstance(entry, dict):
            name = entry.get("name") or (entry.get("metadata") or {}).get("name")
        old = stored.get(name) if isinstance(name, str) else None
        out.append(drop_revoked_trust(entry, old) if old is not None else entry)
    return out


_FIELD_PREFIX = re.compile(
    r"^([A-Za-z][A-Za-z0-9]*(?:\[[0-9]+\])?(?:\.[A-Za-z][A-Za-z0-9]*)*): (.*)\Z", re.S
)


def _signature_cause(where: str, message: str) -> FieldCause:
    """`signatures[0]` + `imageIdentity: Invalid value: ...` → one cause whose field is the
    full path (`signatures[0].imageIdentity`), as kubectl prints `field: message`."""
    match = _FIELD_PREFIX.match(message)
    if match is None or not where.startswith("signatures["):
        return FieldCause(where, message)
    return FieldCause(f"{where}.{match.group(1)}", match.group(2))


class _ImageBase(ResourceHandler):
    def __init__(self, db: Database, host: str) -> None:
        self.db = db
        self.host = host


class Images(_ImageBase):
    info = ResourceInfo(
        GROUP,
        "images",
        "image",
        "Image",
        False,
        verbs=("delete", "get", "list", "patch", "update", "watch"),
    )
    columns = (
        NAME_COLUMN,
        Column("Image Reference", description="The reference to pull this image"),
        Column(
            "Verified",
            description="yes when a signature of the image was verified and saved as Trusted",
        ),
    )
    schema = ANY

    def cells(self, obj: dict[str, Any], now: datetime) -> list[Any]:
        return [obj["metadata"]["name"], obj.get("dockerImageReference", ""), _verified(obj)]

    def get(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        with self.db.read() as conn:
            obj = image_objects.get_image(conn, name, self.host)
        if obj is None:
            raise not_found("images", GROUP, name)
        return obj

    def list(self, ctx: RequestContext, namespace: str, opts: ListOptions) -> ListResult:
        with self.db.read() as conn:
            rv = current_resource_version(conn)
            return _page(image_objects.list_images(conn, self.host), opts, rv)

    def update(
        self, ctx: RequestContext, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        current = self.get(ctx, namespace, name)
        _check_rv(
            (body.get("metadata") or {}).get("resourceVersion"),
            current["metadata"]["resourceVersion"],
            "images",
            name,
        )
        user = _user_data(body, keep_spec=False)
        (user.get("annotations") or {}).pop(image_objects.MANAGED, None)
        entries = _without_revoked_trust(body.get("signatures"), current.get("signatures"))
        if not ctx.dry_run:
            with self.db.write() as conn:
                q.update_image_user_data(conn, name, user)
                try:
                    sigs.apply_image_signatures(
                        conn, name, entries, ctx.clock(), validate=validate_signature_object
                    )
                except sigs.InvalidSignatureUpdate as exc:
                    causes = [_signature_cause(f, m) for f, m in exc.causes]
                    raise invalid("Image", GROUP, name, causes) from None
        return self.get(ctx, namespace, name)

    def delete(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        obj = self.get(ctx, namespace, name)
        with refused_as_forbidden("images", name), self.db.write() as conn:
            if ctx.dry_run:
                tp.check_image_removal(conn, name)
            else:
                q.delete_image(conn, name)
        return obj

    def watch_keys(self) -> Iterable[str]:
        return (IMAGES,)


STREAM_SCHEMA = object_schema(
    spec={"lookupPolicy": {"local": ANY}, "tags": ANY, "dockerImageRepository": ANY},
    status=ANY,
)


class ImageStreams(_ImageBase):
    info = ResourceInfo(
        GROUP,
        "imagestreams",
        "imagestream",
        "ImageStream",
        True,
        short_names=("is",),
        categories=("all",),
    )
    columns = (
        NAME_COLUMN,
        Column("Image Repository", description="Where to pull images of this stream"),
        Column("Tags", description="Tags of the stream"),
        Column("Updated", description="When a tag last changed"),
    )
    schema = STREAM_SCHEMA
    subresources = ("layers", "status")

    def cells(self, obj: dict[str, Any], now: datetime) -> list[Any]:
        tags = (obj.get("status") or {}).get("tags") or []
        names = sorted((t["tag"] for t in tags), key=lambda t: (t != "latest", t))
        created = [t["items"][0]["created"] for t in tags if t.get("items")]
        updated = age(max(created), now) if created else ""
        return [
            obj["metadata"]["name"],
            obj["status"]["dockerImageRepository"],
            ",".join(names),
            updated,
        ]

    def get(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        with self.db.read() as conn:
            row = q.stream_row(conn, namespace, name)
            if row is None:
                raise not_found("imagestreams", GROUP, name)
            return image_objects.render_stream(conn, row, self.host)

    def list(self, ctx: RequestContext, namespace: str, opts: ListOptions) -> ListResult:
        with self.db.read() as conn:
            rv = current_resource_version(conn)
            objs = [
                image_objects.render_stream(conn, row, self.host)
                for row in q.list_stream_rows(conn, namespace)
            ]
        return _page(objs, opts, rv)

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = str((body.get("metadata") or {}).get("name") or "")
        if not is_stream_name(name):
            raise invalid(
                "ImageStream",
                GROUP,
                name,
                [
                    FieldCause(
                        "metadata.name",
                        f'Invalid value: "{name}": must be a lowercase image repository '
                        "name component",
                    )
                ],
            )
        user = _user_data(body, keep_spec=True)
        with self.db.write() as conn:
            if not namespace_exists(conn, namespace):
                raise not_found("namespaces", "", namespace)
            if q.stream_row(conn, namespace, name) is not None:
                raise already_exists("imagestreams", GROUP, name)
            if not ctx.dry_run:
                q.create_stream(conn, namespace, name, user, ctx.clock())
        if ctx.dry_run:
            return {**body, "kind": "ImageStream", "apiVersion": image_objects.IMAGE_API}
        return self.get(ctx, namespace, name)

    def update(
        self, ctx: RequestContext, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        user = _user_data(body, keep_spec=True)
        with self.db.write() as conn:
            row = _stream_for_update(conn, namespace, name, body)
            if user != (row.user_data or {}) and not ctx.dry_run:
                q.update_stream_user_data(conn, row, user)
        return self.get(ctx, namespace, name)

    def delete(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        obj = self.get(ctx, namespace, name)
        with refused_as_forbidden("imagestreams", name), self.db.write() as conn:
            row = q.stream_row(conn, namespace, name)
            if row is not None and ctx.dry_run:
                tp.check_stream_removal(conn, namespace, name, row.id)
            elif row is not None:
                q.delete_stream(conn, row)
        return obj

    def subresource(
        self,
        ctx: RequestContext,
        method: str,
        namespace: str,
        name: str,
        sub: str,
        body: dict[str, Any] | None,
    ) -> tuple[int, dict[str, Any]]:
        if sub == "status" and method == "PUT" and body is not None:
            return 200, self._put_status(ctx, namespace, name, body)
        if method != "GET":
            raise method_not_allowed(method, f"imagestreams/{sub}")
        stream = self.get(ctx, namespace, name)
        if sub == "status":
            return 200, stream
        return 200, self._layers(stream)

    def _put_status(
        self, ctx: RequestContext, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        with refused_as_forbidden("imagestreams", name), self.db.write() as conn:
            row = _stream_for_update(conn, namespace, name, body)
            current: dict[str, list[TagEvent]] = {}
            for event in q.tag_event_rows(conn, row.id):
                current.setdefault(event.tag, []).append(
                    TagEvent(event.id, event.tag, event.digest, image_objects.ts(event.created))
                )
            plan = plan_status(current, body.get("status"), f"{self.host}/{namespace}/{name}")
            if plan.causes:
                raise invalid("ImageStream", GROUP, name, plan.causes)
            for new in plan.new_current:
                # A new current item copies an image into the stream: the caller must be
                # able to pull it from somewhere already (403 also for unknown digests).
                require_image_access(
                    ctx,
                    conn,
                    StreamKey(namespace, name),
                    new.digest,
                    None,
                    resource="imagestreams",
                    name=name,
                )
            causes = [
                FieldCause("status.tags", f"Not found: image {new.digest!r}", "FieldValueNotFound")
                for new in plan.new_current
                if not q.image_exists(conn, new.digest)
            ]
            if causes:
                raise invalid("ImageStream", GROUP, name, causes)
            if plan.changes and not ctx.dry_run:
                q.rewrite_history(
                    conn,
                    row,
                    plan.delete_ids,
                    [(new.tag, new.digest) for new in plan.new_current],
                    ctx.clock(),
                )
        return self.get(ctx, namespace, name)

    def _layers(self, stream: dict[str, Any]) -> dict[str, Any]:
        blobs: dict[str, Any] = {}
        images: dict[str, Any] = {}
        with self.db.read() as conn:
            for tag in stream["status"]["tags"]:
                for item in tag["items"]:
                    image = image_objects.get_image(conn, item["image"], self.host)
                    if image is None or item["image"] in images:
                        continue
                    layers = [layer["name"] for layer in image["dockerImageLayers"]]
                    for layer in image["dockerImageLayers"]:
                        blobs[layer["name"]] = {
                            "size": layer["size"],
                            "mediaType": layer["mediaType"],
                        }
                    entry: dict[str, Any] = {
                        "layers": layers,
                        "config": image["dockerImageMetadata"].get("id", ""),
                    }
                    if image.get("dockerImageManifests"):
                        entry["manifests"] = [m["digest"] for m in image["dockerImageManifests"]]
                    images[item["image"]] = entry
        meta = {
            k: stream["metadata"][k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        }
        return {
            "kind": "ImageStreamLayers",
            "apiVersion": image_objects.IMAGE_API,
            "metadata": meta,
            "blobs": blobs,
            "images": images,
        }

    def watch_keys(self) -> Iterable[str]:
        return (IMAGESTREAMS,)


def namespace_cleanup(conn: Connection, namespace: str) -> None:
    q.delete_namespace_streams(conn, namespace)
