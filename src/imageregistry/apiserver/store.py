"""The generic resource store: Kubernetes verbs over the `objects` table.

Namespaces, service accounts and the RBAC kinds are JSON bodies in one table keyed by
(resource, namespace, name); `StoredResource` implements get, list (limit/continue, label
and `metadata.name` field selectors), create (generateName, namespace must exist), update
(409 on a stale resourceVersion), delete (synchronous: the row is gone before the response,
so `kubectl delete` does not wait) and dry runs. Every write appends to `changes`, whose id is
the new resourceVersion and the watch log. The statements are in `metadata/objects.py`;
this module decides and keeps the transaction boundaries. Per-resource behaviour lives in
subclasses that override the hooks `validate`, `prepare`, `admit` and `on_delete` (one module
per resource).
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

from sqlalchemy import Connection

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
from imageregistry.metadata import objects
from imageregistry.metadata.changelog import latest_change_id
from imageregistry.metadata.db import Database, record_change
from imageregistry.metadata.namespaces import namespace_exists

_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # kube's generateName alphabet


def current_resource_version(conn: Connection) -> str:
    return str(latest_change_id(conn))


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

    def _row(self, conn: Connection, namespace: str, name: str) -> objects.StoredObject | None:
        return objects.find_object(conn, self.info.key, namespace, name)

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
        with self.db.read() as conn:
            return objects.bodies_by_key(conn, self.info.key, keys)

    def list(self, ctx: RequestContext, namespace: str, opts: ListOptions) -> ListResult:
        labels = label_predicate(opts.label_selector) if opts.label_selector else None
        fields = field_predicate(opts.field_selector) if opts.field_selector else None
        pinned = name_from_field_selector(opts.field_selector) if opts.field_selector else None
        after = decode_continue(opts.continue_token) if opts.continue_token else None
        items: list[dict[str, Any]] = []
        token = ""
        with self.db.read() as conn:
            rv = current_resource_version(conn)
            rows = objects.iter_objects(conn, self.info.key, namespace, name=pinned, after=after)
            for row in rows:
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
            objects.insert_object(
                conn,
                self.info.key,
                namespace,
                name,
                uid=meta["uid"],
                resource_version=rv,
                created=now,
                body=obj,
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
            objects.replace_object(conn, row.id, rv, obj)
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
            objects.delete_object(conn, row.id)
            rv = record_change(conn, self.info.key, namespace, name, "DELETED")
            obj["metadata"] = {**obj["metadata"], "resourceVersion": str(rv)}
            self.on_delete(conn, obj)
        return obj
