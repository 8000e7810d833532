"""The generic resource store: Kubernetes verbs over the `objects` table.

Namespaces, service accounts and the RBAC kinds are JSON bodies in one table keyed by
(resource, namespace, name); `StoredResource` implements get, list (limit/continue, label
and `metadata.name` field selectors), create (generateName, namespace must exist), update
(409 on a stale resourceVersion), delete (synchronous: the row is gone before the response,
so `kubectl delete` does not wait) and dry runs. Every write appends to `changes`, whose id is
the new resourceVersion and the watch log. Per-resource behaviour lives in subclasses that
override the hooks `validate`, `prepare`, `admit` and `on_delete` (one module per resource).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, tuple_, update

from imageregistry.apiserver.resource import (
    ListOptions,
    ListResult,
    RequestContext,
    ResourceHandler,
)
from imageregistry.apiserver.selectors import (
    field_predicate,
    label_predicate,
    name_from_field_selector,
)
from imageregistry.apiserver.status import (
    ApiError,
    FieldCause,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
)
from imageregistry.apiserver.validation import (
    NameCheck,
    dns1123_subdomain,
    label_causes,
    name_causes,
)
from imageregistry.clock import rfc3339
from imageregistry.httpinput import load_json
from imageregistry.metadata.db import Database, record_change
from imageregistry.metadata.namespaces import namespace_exists
from imageregistry.metadata.tables import changes, objects

_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # kube's generateName alphabet


def current_resource_version(conn: Connection) -> str:
    return str(conn.execute(select(func.max(changes.c.id))).scalar() or 0)


def encode_continue(namespace: str, name: str) -> str:
    raw = json.dumps({"ns": namespace, "name": name}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_continue(token: str) -> tuple[str, str]:
    try:
        data = load_json(base64.urlsafe_b64decode(token.encode()))
        ns, name = data["ns"], data["name"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        # the token is client-supplied JSON: load_json raises InvalidJSON (a ValueError)
        raise bad_request("continue key is not valid") from None
    if not isinstance(ns, str) or not isinstance(name, str) or "\x00" in ns + name:
        raise bad_request("continue key is not valid")
    return ns, name


class StoredResource(ResourceHandler):
    """A resource whose objects live in the `objects` table."""

    name_check: NameCheck = staticmethod(dns1123_subdomain)

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- hooks -----------------------------------------------------------------------

    def validate(self, ctx: RequestContext, obj: dict[str, Any]) -> list[FieldCause]:
        return []

    def prepare(self, ctx: RequestContext, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Defaults and server-owned fields, before validation."""

    def admit(self, ctx: RequestContext, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Cross-object checks (escalation prevention); raise an ApiError to refuse."""

    def on_delete(self, conn: Connection, obj: dict[str, Any]) -> None:
        """Cascade inside the deleting transaction."""

    def lock(self, conn: Connection, namespace: str) -> None:
        """Taken first in every create, update and delete transaction (a lock other writes
        of the namespace must queue behind)."""

    # --- helpers ---------------------------------------------------------------------

    def _row(self, conn: Connection, namespace: str, name: str) -> Any:
        return conn.execute(
            select(objects.c.id, objects.c.resource_version, objects.c.body).where(
                objects.c.resource == self.info.key,
                objects.c.namespace == namespace,
                objects.c.name == name,
            )
        ).first()

    def _not_found(self, name: str) -> ApiError:
        return not_found(self.info.plural, self.info.group, name)

    def _normalize(self, body: dict[str, Any], namespace: str) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        obj["kind"] = self.info.kind
        obj["apiVersion"] = self.info.api_version
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if self.info.namespaced:
            given = meta.get("namespace")
            if given and given != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta.pop("managedFields", None)
        meta.pop("selfLink", None)
        return obj

    def _check(self, ctx: RequestContext, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        name = meta.get("name") or ""
        causes = name_causes(name, self.name_check) if isinstance(name, str) else []
        if not isinstance(name, str):
            causes = [FieldCause("metadata.name", "Invalid value: must be a string")]
        causes += label_causes(meta)
        if not causes:
            causes = self.validate(ctx, obj)
        if causes:
            raise invalid(self.info.kind, self.info.group, str(name), causes)

    # --- verbs -----------------------------------------------------------------------

    def get(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        with self.db.read() as conn:
            row = self._row(conn, namespace, name)
        if row is None:
            raise self._not_found(name)
        return dict(row.body)

    def get_many(
        self, ctx: RequestContext, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """One query for a whole page of watch events."""
        if not keys:
            return {}
        query = select(objects.c.namespace, objects.c.name, objects.c.body).where(
            objects.c.resource == self.info.key,
            tuple_(objects.c.namespace, objects.c.name).in_(list(keys)),
        )
        with self.db.read() as conn:
            return {(row.namespace, row.name): dict(row.body) for row in conn.execute(query)}

    def list(self, ctx: RequestContext, namespace: str, opts: ListOptions) -> ListResult:
        labels = label_predicate(opts.label_selector) if opts.label_selector else None
        fields = field_predicate(opts.field_selector) if opts.field_selector else None
        query = select(objects.c.namespace, objects.c.name, objects.c.body).where(
            objects.c.resource == self.info.key
        )
        if namespace:
            query = query.where(objects.c.namespace == namespace)
        pinned = name_from_field_selector(opts.field_selector) if opts.field_selector else None
        if pinned is not None:
            query = query.where(objects.c.name == pinned)
        if opts.continue_token:
            ns, name = decode_continue(opts.continue_token)
            query = query.where(
                or_(
                    objects.c.namespace > ns, and_(objects.c.namespace == ns, objects.c.name > name)
                )
            )
        query = query.order_by(objects.c.namespace, objects.c.name)
        items: list[dict[str, Any]] = []
        token = ""
        with self.db.read() as conn:
            rv = current_resource_version(conn)
            for row in conn.execute(query):
                body = dict(row.body)
                if (labels and not labels(body)) or (fields and not fields(body)):
                    continue
                if opts.limit and len(items) == opts.limit:
                    last = items[-1]["metadata"]
                    token = encode_continue(last.get("namespace", ""), last["name"])
                    break
                items.append(body)
        return ListResult(items, rv, token)

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = self._normalize(body, namespace)
        meta = obj["metadata"]
        prefix = meta.get("generateName")
        if not meta.get("name") and prefix and isinstance(prefix, str):
            suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
            meta["name"] = prefix + suffix
        for key in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
        ):
            meta.pop(key, None)
        self.prepare(ctx, obj, None)
        self._check(ctx, obj)
        self.admit(ctx, obj, None)
        name = meta["name"]
        now = ctx.clock()
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(now)
        with self.db.write() as conn:
            self.lock(conn, namespace)
            if self.info.namespaced and not namespace_exists(conn, namespace):
                raise not_found("namespaces", "", namespace)
            if self._row(conn, namespace, name) is not None:
                raise already_exists(self.info.plural, self.info.group, name)
            if ctx.dry_run:
                return obj
            rv = record_change(conn, self.info.key, namespace, name, "ADDED")
            meta["resourceVersion"] = str(rv)
            conn.execute(
                insert(objects).values(
                    resource=self.info.key,
                    namespace=namespace,
                    name=name,
                    uid=meta["uid"],
                    resource_version=rv,
                    created=now,
                    labels=meta.get("labels") or {},
                    body=obj,
                )
            )
        return obj

    def update(
        self, ctx: RequestContext, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        obj = self._normalize(body, namespace)
        meta = obj["metadata"]
        if meta.get("name") not in (None, "", name):
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on "
                f"the URL ({name})"
            )
        meta["name"] = name
        with self.db.write() as conn:
            self.lock(conn, namespace)
            row = self._row(conn, namespace, name)
            if row is None:
                raise self._not_found(name)
            old = dict(row.body)
            given = meta.get("resourceVersion")
            if given and str(given) != str(row.resource_version):
                raise conflict(
                    self.info.plural,
                    self.info.group,
                    name,
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                )
            for key in ("uid", "creationTimestamp"):
                meta[key] = old["metadata"].get(key)
            meta["resourceVersion"] = str(row.resource_version)
            self.prepare(ctx, obj, old)
            self._check(ctx, obj)
            if obj == old:
                return old  # no-op updates keep their resourceVersion, as in kube
            self.admit(ctx, obj, old)
            if ctx.dry_run:
                return obj
            rv = record_change(conn, self.info.key, namespace, name, "MODIFIED")
            meta["resourceVersion"] = str(rv)
            conn.execute(
                update(objects)
                .where(objects.c.id == row.id)
                .values(resource_version=rv, labels=meta.get("labels") or {}, body=obj)
            )
        return obj

    def delete(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        with self.db.write() as conn:
            self.lock(conn, namespace)
            row = self._row(conn, namespace, name)
            if row is None:
                raise self._not_found(name)
            obj = dict(row.body)
            if ctx.dry_run:
                return obj
            conn.execute(delete(objects).where(objects.c.id == row.id))
            rv = record_change(conn, self.info.key, namespace, name, "DELETED")
            obj["metadata"] = {**obj["metadata"], "resourceVersion": str(rv)}
            self.on_delete(conn, obj)
        return obj


def delete_namespace_objects(conn: Connection, namespace: str) -> None:
    """Remove every object of a namespace, logging a DELETED change for each (watchers)."""
    rows = conn.execute(
        select(objects.c.id, objects.c.resource, objects.c.name).where(
            objects.c.namespace == namespace
        )
    ).all()
    for row in rows:
        record_change(conn, row.resource, namespace, row.name, "DELETED")
    if rows:
        conn.execute(delete(objects).where(objects.c.namespace == namespace))
