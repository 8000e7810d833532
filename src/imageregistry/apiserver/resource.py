"""What every API resource is: its identity for discovery, and the handler protocol routes call.

`ResourceInfo` is the discovery entry (group, version, plural, kind, scope, verbs, short
names). `ResourceHandler` is the base class of every resource implementation: the generic
object store's resources, the image resources rendered from typed tables, and the review
resources that compute an answer without storing anything. A verb a handler does not
override answers 405 MethodNotAllowed. `RequestContext` is the per-request state that
handlers receive instead of the HTTP request: who is asking (already authorized for the
request's action by the dispatcher, `api_dispatch.py`), dry run, the clock, and the
authorizer for the named admission steps of `admission.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imageregistry.apiserver.admission import admission_allows
from imageregistry.apiserver.codec import ANY, Schema
from imageregistry.apiserver.status import ApiError, method_not_allowed
from imageregistry.apiserver.tables import AGE_COLUMN, NAME_COLUMN, Column, default_cells
from imageregistry.auth.authorizer import Authorizer
from imageregistry.auth.identity import UserInfo

CRUD_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceInfo:
    group: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...] = CRUD_VERBS
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    version: str = "v1"

    @property
    def key(self) -> str:
        """The `objects.resource` / `changes.resource` key: `plural` or `plural.group`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class ListOptions:
    limit: int = 0
    continue_token: str = ""
    label_selector: str = ""
    field_selector: str = ""
    resource_version: str = ""


@dataclass(frozen=True)
class ListResult:
    items: list[dict[str, Any]]
    resource_version: str
    continue_token: str = ""


@dataclass(frozen=True)
class RequestContext:
    user: UserInfo
    authorizer: Authorizer
    clock: Callable[[], datetime]
    dry_run: bool = False
    field_manager: str = ""
    warnings: list[str] = field(default_factory=list)

    def admission_allows(
        self,
        verb: str,
        group: str,
        resource: str,
        *,
        subresource: str = "",
        name: str = "",
        namespace: str = "",
    ) -> bool:
        """An admission step's extra review of the caller (`admission.py` names each one);
        the request itself was authorized before the handler ran."""
        return admission_allows(
            self.authorizer,
            self.user,
            verb,
            group,
            resource,
            subresource=subresource,
            name=name,
            namespace=namespace,
        )


PatchFn = Callable[[dict[str, Any]], dict[str, Any]]


class ResourceHandler:
    """Base class: one resource's verbs. Subclasses override what they support."""

    info: ResourceInfo
    schema: Schema = ANY
    columns: tuple[Column, ...] = (NAME_COLUMN, AGE_COLUMN)
    subresources: tuple[str, ...] = ()
    derived_view: bool = False  # watch events come from `derived_objects` diffs

    def cells(self, obj: dict[str, Any], now: datetime) -> list[Any]:
        return default_cells(obj, now)

    def get(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        raise method_not_allowed("get", self.info.plural)

    def list(self, ctx: RequestContext, namespace: str, opts: ListOptions) -> ListResult:
        raise method_not_allowed("list", self.info.plural)

    def get_many(
        self, ctx: RequestContext, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """The objects that exist of these (namespace, name) keys, for a page of watch events.
        This default gets them one by one; a handler that can read them in one query
        (the object store) overrides it."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for namespace, name in keys:
            try:
                found[(namespace, name)] = self.get(ctx, namespace, name)
            except ApiError:
                continue
        return found

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        raise method_not_allowed("create", self.info.plural)

    def update(
        self, ctx: RequestContext, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        raise method_not_allowed("update", self.info.plural)

    def patch(
        self, ctx: RequestContext, namespace: str, name: str, patch: PatchFn
    ) -> dict[str, Any]:
        """Default: read, apply, update with the read resourceVersion (409 if it moved)."""
        current = self.get(ctx, namespace, name)
        return self.update(ctx, namespace, name, patch(current))

    def delete(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        raise method_not_allowed("delete", self.info.plural)

    def watch_keys(self) -> Iterable[str]:
        """`changes.resource` keys whose rows are events of this resource."""
        return (self.info.key,)

    def derived_objects(
        self, ctx: RequestContext, namespace: str, source: str
    ) -> dict[str, dict[str, Any]] | None:
        """For a view over another resource (ImageStreamTags over ImageStreams): every object
        derived from the source object named in a change row, by name; watch diffs these to
        emit ADDED/MODIFIED/DELETED. None (the default): change rows are this resource's own."""
        return None

    def source_name(self, name: str) -> str:
        """The source object (see `derived_objects`) an object's name derives from."""
        return name

    def subresource(
        self,
        ctx: RequestContext,
        method: str,
        namespace: str,
        name: str,
        sub: str,
        body: dict[str, Any] | None,
    ) -> tuple[int, dict[str, Any]]:
        raise method_not_allowed(method, f"{self.info.plural}/{sub}")

    def subresource_schema(self, sub: str) -> Schema:
        return ANY
