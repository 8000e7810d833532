"""ImageStreamTag (`stream:tag`), ImageStreamImage (`stream@digest`) and ImageStreamMapping.

An ImageStreamTag shows the current image of one tag; deleting it removes the tag and its
history from the stream. An ImageStreamImage is an image as seen in a stream. Creating an
ImageStreamMapping records "this tag now points at this image" exactly as a push by tag
does (behaviour.md §2).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imageregistry.apiserver.codec import ANY, object_schema
from imageregistry.apiserver.resource import ListOptions, ListResult, RequestContext, ResourceInfo
from imageregistry.apiserver.resources.images import GROUP, _ImageBase, _page
from imageregistry.apiserver.status import FieldCause, bad_request, invalid, not_found
from imageregistry.apiserver.store import current_resource_version, namespace_exists
from imageregistry.apiserver.tables import NAME_COLUMN, Column, age
from imageregistry.metadata import images as q
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
        verbs=("delete", "get", "list"),
        short_names=("istag",),
    )
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
        image = q.get_image(conn, event.digest, self.host) or {"metadata": {"name": event.digest}}
        image["dockerImageReference"] = f"{self.host}/{row.namespace}/{row.name}@{event.digest}"
        image.pop("dockerImageManifest", None)
        spec = dict((row.user_data or {}).get("spec") or {})
        ref = next(
            (t for t in spec.get("tags") or [] if isinstance(t, dict) and t.get("name") == tag),
            None,
        )
        return {
            "kind": "ImageStreamTag",
            "apiVersion": q.IMAGE_API,
            "metadata": {
                "name": f"{row.name}:{tag}",
                "namespace": row.namespace,
                "uid": row.uid,
                "resourceVersion": str(row.resource_version),
                "creationTimestamp": q.ts(event.created),
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
                for tag in sorted(q.tag_history(conn, row.id, self.host, row.namespace, row.name)):
                    obj = self._render(conn, row, tag)
                    if obj is not None:
                        objs.append(obj)
        return _page(objs, opts, rv)

    def delete(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        stream, tag = _split(name, ":", "imagestreamtags")
        obj = self.get(ctx, namespace, name)
        if not ctx.dry_run:
            with self.db.write() as conn:
                row = q.stream_row(conn, namespace, stream)
                if row is None or not q.delete_tag(conn, row, tag):
                    raise not_found("imagestreamtags", GROUP, name)
        return obj

    def watch_keys(self) -> tuple[str, ...]:
        return (IMAGESTREAMS,)


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
                image = q.get_image(conn, digest, self.host)
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
            "apiVersion": q.IMAGE_API,
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
        digest = str((image.get("metadata") or {}).get("name") or "")
        causes = []
        if not stream:
            causes.append(FieldCause("metadata.name", "Required value", "FieldValueRequired"))
        if not isinstance(tag, str) or not tag:
            causes.append(FieldCause("tag", "Required value", "FieldValueRequired"))
        if not digest:
            causes.append(FieldCause("image.metadata.name", "Required value", "FieldValueRequired"))
        if causes:
            raise invalid("ImageStreamMapping", GROUP, stream, causes)
        assert isinstance(tag, str)
        with self.db.write() as conn:
            if not namespace_exists(conn, namespace):
                raise not_found("namespaces", "", namespace)
            if q.get_image(conn, digest, self.host) is None:
                raise not_found("images", GROUP, digest)
            if not ctx.dry_run:
                q.record_mapping(conn, namespace, stream, tag, digest, ctx.clock())
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }
