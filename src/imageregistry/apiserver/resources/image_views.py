"""ImageStreamTag (`stream:tag`), ImageStreamImage (`stream@digest`) and ImageStreamMapping.

An ImageStreamTag shows the current image of one tag; deleting it removes the tag and its history
from the stream. An ImageStreamImage is an image as seen in a stream. Creating an ImageStreamMapping
records "this tag now points at this image" exactly as a push by tag does
(docs/behaviour.md#image-api-resources). Both writes go through `image_access.require_image_access`:
the caller must already be able to pull the image they put into the stream.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imageregistry.apiserver.codec import ANY, object_schema
from imageregistry.apiserver.imagetagpolicy import refused_as_forbidden
from imageregistry.apiserver.resource import ListOptions, ListResult, RequestContext, ResourceInfo
from imageregistry.apiserver.resources import image_objects
from imageregistry.apiserver.resources.image_access import StreamKey, require_image_access
from imageregistry.apiserver.resources.images import GROUP, _ImageBase, _page
from imageregistry.apiserver.resources.tag_sources import (
    DIGEST,
    check_resource_version,
    resolve_tag_source,
    split_tag_name,
)
from imageregistry.apiserver.status import (
    FieldCause,
    already_exists,
    bad_request,
    invalid,
    not_found,
)
from imageregistry.apiserver.store import current_resource_version
from imageregistry.apiserver.tables import NAME_COLUMN, Column, age
from imageregistry.content.reference import is_stream_name, is_tag
from imageregistry.metadata import images as q
from imageregistry.metadata import tag_policies as tp
from imageregistry.metadata.namespaces import namespace_exists
from imageregistry.metadata.registry import IMAGESTREAMS


def _split(name: str, sep: str, plural: str) -> tuple[str, str]:
    stream, found, rest = name.partition(sep)
    if not found or not stream or not rest:
        raise bad_request(
            f"{plural} must be retrieved with <name>{sep}<{'tag' if sep == ':' else 'id'}>"
        )
    return stream, rest


class ImageStreamTags(_ImageBase):
    info = ResourceInfo(
        GROUP,
        "imagestreamtags",
        "imagestreamtag",
        "ImageStreamTag",
        True,
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        short_names=("istag",),
    )
    derived_view = True
    schema = object_schema(tag=ANY, image=ANY, generation=ANY, lookupPolicy=ANY, conditions=ANY)
    columns = (
        NAME_COLUMN,
        Column("Image Reference", description="The reference to pull the current image"),
        Column("Updated", description="When the tag last changed"),
        Column("Image Name", priority=1, description="The current image"),
    )

    def cells(self, obj: dict[str, Any], now: datetime) -> list[Any]:
        image = obj.get("image") or {}
        return [
            obj["metadata"]["name"],
            image.get("dockerImageReference", ""),
            age(obj["metadata"].get("creationTimestamp"), now),
            image.get("metadata", {}).get("name", ""),
        ]

    def _render(self, conn: Any, row: Any, tag: str) -> dict[str, Any] | None:
        event = q.current_tag(conn, row.id, tag)
        if event is None:
            return None
        image = image_objects.get_image(conn, event.digest, self.host) or {
            "metadata": {"name": event.digest}
        }
        image["dockerImageReference"] = f"{self.host}/{row.namespace}/{row.name}@{event.digest}"
        image.pop("dockerImageManifest", None)
        spec = dict((row.user_data or {}).get("spec") or {})
        ref = next(
            (t for t in spec.get("tags") or [] if isinstance(t, dict) and t.get("name") == tag),
            None,
        )
        return {
            "kind": "ImageStreamTag",
            "apiVersion": image_objects.IMAGE_API,
            "metadata": {
                "name": f"{row.name}:{tag}",
                "namespace": row.namespace,
                "uid": row.uid,
                "resourceVersion": str(row.resource_version),
                "creationTimestamp": image_objects.ts(event.created),
            },
            "tag": ref,
            "generation": event.generation,
            "lookupPolicy": spec.get("lookupPolicy") or {"local": False},
            "image": image,
        }

    def get(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        stream, tag = _split(name, ":", "imagestreamtags")
        with self.db.read() as conn:
            row = q.stream_row(conn, namespace, stream)
            obj = None if row is None else self._render(conn, row, tag)
        if obj is None:
            raise not_found("imagestreamtags", GROUP, name)
        return obj

    def list(self, ctx: RequestContext, namespace: str, opts: ListOptions) -> ListResult:
        objs = []
        with self.db.read() as conn:
            rv = current_resource_version(conn)
            for row in q.list_stream_rows(conn, namespace):
                for tag in sorted(image_objects.stream_history(conn, row, self.host)):
                    obj = self._render(conn, row, tag)
                    if obj is not None:
                        objs.append(obj)
        return _page(objs, opts, rv)

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = str((body.get("metadata") or {}).get("name") or "")
        return self._write(ctx, namespace, name, body, creating=True)

    def update(
        self, ctx: RequestContext, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        given = (body.get("metadata") or {}).get("name")
        if given not in (None, "", name):
            raise bad_request(
                f"the name of the object ({given}) does not match the name on the URL ({name})"
            )
        return self._write(ctx, namespace, name, body, creating=False)

    def _write(
        self, ctx: RequestContext, namespace: str, name: str, body: dict[str, Any], creating: bool
    ) -> dict[str, Any]:
        """Point the tag at the image `tag.from` names (docs/behaviour.md#image-api-resources: like
        a push by tag).
        """
        stream, tag = split_tag_name(name)
        with refused_as_forbidden("imagestreamtags", name), self.db.write() as conn:
            if not namespace_exists(conn, namespace):
                raise not_found("namespaces", "", namespace)
            row = q.stream_row(conn, namespace, stream)
            exists = row is not None and q.current_tag(conn, row.id, tag) is not None
            if creating and exists:
                raise already_exists("imagestreamtags", GROUP, name)
            if exists and not creating and row is not None:
                check_resource_version(body, str(row.resource_version), name)
            target = StreamKey(namespace, stream)
            digest = resolve_tag_source(ctx, conn, self.host, target, name, body.get("tag"))
            if digest is None and not exists:
                raise invalid(
                    "ImageStreamTag",
                    GROUP,
                    name,
                    [FieldCause("tag.from", "Required value", "FieldValueRequired")],
                )
            if digest is not None and ctx.dry_run and exists and row is not None:
                current = q.current_tag(conn, row.id, tag)
                old = None if current is None else current.digest
                tp.check_move(conn, namespace, stream, tag, old, digest)
            elif digest is not None and not ctx.dry_run:
                q.record_mapping(conn, namespace, stream, tag, digest, ctx.clock())
        if ctx.dry_run and digest is not None:
            return {**body, "kind": "ImageStreamTag", "apiVersion": image_objects.IMAGE_API}
        return self.get(ctx, namespace, name)

    def delete(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        stream, tag = _split(name, ":", "imagestreamtags")
        obj = self.get(ctx, namespace, name)
        with refused_as_forbidden("imagestreamtags", name), self.db.write() as conn:
            row = q.stream_row(conn, namespace, stream)
            if row is not None and ctx.dry_run:
                tp.check_tag_removal(conn, namespace, stream, tag)
            elif row is None or not q.delete_tag(conn, row, tag):
                raise not_found("imagestreamtags", GROUP, name)
        return obj

    def watch_keys(self) -> tuple[str, ...]:
        return (IMAGESTREAMS,)

    def derived_objects(
        self, ctx: RequestContext, namespace: str, source: str
    ) -> dict[str, dict[str, Any]]:
        """The current tags of one stream (watch events derive from stream changes)."""
        out: dict[str, dict[str, Any]] = {}
        with self.db.read() as conn:
            row = q.stream_row(conn, namespace, source)
            if row is None:
                return out
            for tag in sorted({event.tag for event in q.tag_event_rows(conn, row.id)}):
                obj = self._render(conn, row, tag)
                if obj is not None:
                    out[obj["metadata"]["name"]] = obj
        return out

    def source_name(self, name: str) -> str:
        return name.partition(":")[0]


class ImageStreamImages(_ImageBase):
    info = ResourceInfo(
        GROUP,
        "imagestreamimages",
        "imagestreamimage",
        "ImageStreamImage",
        True,
        verbs=("get",),
        short_names=("isimage",),
    )

    def get(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        stream, digest = _split(name, "@", "imagestreamimages")
        with self.db.read() as conn:
            row = q.stream_row(conn, namespace, stream)
            image = None
            if row is not None and q.image_in_stream(conn, row.id, digest):
                image = image_objects.get_image(conn, digest, self.host)
        if row is None or image is None:
            raise not_found("imagestreamimages", GROUP, name)
        image["dockerImageReference"] = f"{self.host}/{namespace}/{stream}@{digest}"
        meta = {
            "name": name,
            "namespace": namespace,
            "uid": row.uid,
            "resourceVersion": str(row.resource_version),
            "creationTimestamp": image["metadata"].get("creationTimestamp"),
        }
        return {
            "kind": "ImageStreamImage",
            "apiVersion": image_objects.IMAGE_API,
            "metadata": meta,
            "image": image,
        }


class ImageStreamMappings(_ImageBase):
    info = ResourceInfo(
        GROUP,
        "imagestreammappings",
        "imagestreammapping",
        "ImageStreamMapping",
        True,
        verbs=("create",),
    )
    schema = object_schema(tag=ANY, image=ANY)

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.get("metadata") or {}
        stream, tag = str(meta.get("name") or ""), body.get("tag")
        image = body.get("image") if isinstance(body.get("image"), dict) else {}
        assert isinstance(image, dict)
        image_meta = image.get("metadata")
        digest = str(image_meta.get("name") or "") if isinstance(image_meta, dict) else ""
        causes = []
        if not stream:
            causes.append(FieldCause("metadata.name", "Required value", "FieldValueRequired"))
        elif not is_stream_name(stream):
            causes.append(
                FieldCause(
                    "metadata.name",
                    f'Invalid value: "{stream}": must be a lowercase image repository name '
                    "component",
                )
            )
        if not isinstance(tag, str) or not tag:
            causes.append(FieldCause("tag", "Required value", "FieldValueRequired"))
        elif not is_tag(tag):
            causes.append(FieldCause("tag", f'Invalid value: "{tag}": must be a valid tag name'))
        if not digest:
            causes.append(FieldCause("image.metadata.name", "Required value", "FieldValueRequired"))
        elif not DIGEST.match(digest):
            causes.append(
                FieldCause("image.metadata.name", f'Invalid value: "{digest}": must be a digest')
            )
        if causes:
            raise invalid("ImageStreamMapping", GROUP, stream, causes)
        assert isinstance(tag, str)
        with refused_as_forbidden("imagestreammappings", stream), self.db.write() as conn:
            if not namespace_exists(conn, namespace):
                raise not_found("namespaces", "", namespace)
            # 403 before 404: an unknown digest answers like one the caller cannot read
            require_image_access(
                ctx,
                conn,
                StreamKey(namespace, stream),
                digest,
                None,
                resource="imagestreammappings",
                name=stream,
            )
            if image_objects.get_image(conn, digest, self.host) is None:
                raise not_found("images", GROUP, digest)
            if ctx.dry_run:
                row = q.stream_row(conn, namespace, stream)
                current = None if row is None else q.current_tag(conn, row.id, tag)
                old = None if current is None else str(current.digest)
                tp.check_move(conn, namespace, stream, tag, old, digest)
            else:
                q.record_mapping(conn, namespace, stream, tag, digest, ctx.clock())
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }
