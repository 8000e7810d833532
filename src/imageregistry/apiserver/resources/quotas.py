"""`v1` ResourceQuota and LimitRange for images, stored in the generic object table.

A ResourceQuota's `spec.hard` may name `count/imagestreams.image.alauda.io`,
`image.alauda.io/storage` and `image.alauda.io/images`; a LimitRange's items are of type
`image.alauda.io/Image` (`max.storage`) or `image.alauda.io/ImageStream` (`max` of
`image.alauda.io/image-tags` and `image.alauda.io/images`). Anything else is Invalid: a
limit the registry would not enforce must not look like one (`metadata.quota`).

`status` of a ResourceQuota is never stored: every read renders `status.hard` from
`spec.hard` and `status.used` from the namespace's usage, computed by
`metadata.quota.namespace_usage` in the read's own transaction, so `kubectl describe quota`
shows exactly what the registry holds at that moment, with no controller to lag behind.
Writes follow Kubernetes RBAC: namespace viewers, editors and admins read both kinds;
only cluster-admin writes them (`auth.bootstrap_roles`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from imageregistry.apiserver.codec import ANY, object_schema
from imageregistry.apiserver.resource import ListOptions, ListResult, RequestContext, ResourceInfo
from imageregistry.apiserver.status import FieldCause
from imageregistry.apiserver.store import StoredResource
from imageregistry.apiserver.tables import AGE_COLUMN, NAME_COLUMN, Column, created_age
from imageregistry.metadata.quota import (
    BYTE_RESOURCES,
    LIMIT_RANGES,
    QUOTAS,
    Usage,
    limit_items,
    namespace_usage,
    quota_hard,
)
from imageregistry.quantity import format_quantity

assert QUOTAS == "resourcequotas" and LIMIT_RANGES == "limitranges"


def _cause(message: str) -> FieldCause:
    path, _, why = message.partition(": ")
    return FieldCause(path, f"Invalid value: {why}" if why else message)


def format_usage(resource: str, value: int) -> str:
    return format_quantity(value, binary=resource in BYTE_RESOURCES)


class ResourceQuotas(StoredResource):
    info = ResourceInfo(
        "", "resourcequotas", "resourcequota", "ResourceQuota", True, short_names=("quota",)
    )
    schema = object_schema(spec=ANY, status=ANY)
    columns = (
        NAME_COLUMN,
        AGE_COLUMN,
        Column("Request", description="Used and hard of each resource"),
    )

    def cells(self, obj: dict[str, Any], now: datetime) -> list[Any]:
        status = obj.get("status") or {}
        used, hard = status.get("used") or {}, status.get("hard") or {}
        request = ", ".join(f"{r}: {used.get(r, '0')}/{hard[r]}" for r in sorted(hard))
        return [obj["metadata"].get("name", ""), created_age(obj, now), request]

    def validate(self, ctx: RequestContext, obj: dict[str, Any]) -> list[FieldCause]:
        try:
            quota_hard(obj.get("spec") or {})
        except ValueError as exc:
            return [_cause(str(exc))]
        return []

    def prepare(self, ctx: RequestContext, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        obj.pop("status", None)  # rendered on every read, never stored

    def _render(self, obj: dict[str, Any], usage: Usage) -> dict[str, Any]:
        hard = (obj.get("spec") or {}).get("hard") or {}
        try:
            limits = quota_hard(obj.get("spec") or {})
        except ValueError:
            limits = {}
        obj["status"] = {
            "hard": dict(hard),
            "used": {r: format_usage(r, usage.get(r)) for r in limits},
        }
        return obj

    def _with_status(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_ns: dict[str, Usage] = {}
        with self.db.read() as conn:
            for obj in items:
                ns = obj["metadata"].get("namespace", "")
                if ns not in by_ns:
                    by_ns[ns] = namespace_usage(conn, ns)
                self._render(obj, by_ns[ns])
        return items

    def get(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        return self._with_status([super().get(ctx, namespace, name)])[0]

    def get_many(
        self, ctx: RequestContext, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        found = super().get_many(ctx, keys)
        self._with_status(list(found.values()))
        return found

    def list(self, ctx: RequestContext, namespace: str, opts: ListOptions) -> ListResult:
        result = super().list(ctx, namespace, opts)
        self._with_status(result.items)
        return result

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._with_status([super().create(ctx, namespace, body)])[0]

    def update(
        self, ctx: RequestContext, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return self._with_status([super().update(ctx, namespace, name, body)])[0]


class LimitRanges(StoredResource):
    info = ResourceInfo(
        "", "limitranges", "limitrange", "LimitRange", True, short_names=("limits",)
    )
    schema = object_schema(spec=ANY)

    def validate(self, ctx: RequestContext, obj: dict[str, Any]) -> list[FieldCause]:
        try:
            limit_items(obj["metadata"].get("name", ""), obj.get("spec") or {})
        except ValueError as exc:
            return [_cause(str(exc))]
        return []
