"""`watch=true`: newline-delimited JSON watch events, fed by polling the `changes` log.

The `changes` table's id is the database-wide resourceVersion, so a watch from version N is
"every change row with id > N for this resource", which works the same on one process or many
replicas sharing a database. A watch without a resourceVersion (or "0") first replays the
current objects as ADDED, as kube-apiserver does. Each event's object is read when the event
is sent (deleted objects are sent with their last known key); with a Table Accept header the
object is a one-row Table, columns only in the first event (as upstream).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from imageregistry.apiserver.resource import ListOptions, RequestContext, ResourceHandler
from imageregistry.apiserver.selectors import field_predicate, label_predicate
from imageregistry.apiserver.status import ApiError
from imageregistry.metadata.db import Database
from imageregistry.metadata.tables import changes

POLL_SECONDS = 0.25
BATCH = 500


@dataclass(frozen=True)
class Change:
    id: int
    namespace: str
    name: str
    event: str


def changes_after(db: Database, keys: tuple[str, ...], after: int, namespace: str) -> list[Change]:
    query = (
        select(changes.c.id, changes.c.namespace, changes.c.name, changes.c.event)
        .where(changes.c.resource.in_(keys), changes.c.id > after)
        .order_by(changes.c.id)
        .limit(BATCH)
    )
    if namespace:
        query = query.where(changes.c.namespace == namespace)
    with db.read() as conn:
        return [Change(int(r.id), r.namespace, r.name, r.event) for r in conn.execute(query)]


def latest_change(db: Database) -> int:
    from imageregistry.apiserver.store import current_resource_version

    with db.read() as conn:
        return int(current_resource_version(conn))


class WatchStream:
    """One watch request's event source."""

    def __init__(
        self,
        db: Database,
        handler: ResourceHandler,
        ctx: RequestContext,
        namespace: str,
        opts: ListOptions,
        render: Callable[[dict[str, Any], bool], dict[str, Any]],
    ) -> None:
        self.db = db
        self.handler = handler
        self.ctx = ctx
        self.namespace = namespace
        self.opts = opts
        self.render = render
        self.labels = label_predicate(opts.label_selector) if opts.label_selector else None
        self.fields = field_predicate(opts.field_selector) if opts.field_selector else None
        self.first = True
        # derived views: (namespace, source name) -> the objects last seen, by name
        self.derived: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.seeded_at = 0
        self.caught_up: set[tuple[str, str]] = set()

    def _matches(self, obj: dict[str, Any]) -> bool:
        return not (
            (self.labels and not self.labels(obj)) or (self.fields and not self.fields(obj))
        )

    def _event(self, kind: str, obj: dict[str, Any]) -> bytes:
        rendered = self.render(obj, self.first)
        self.first = False
        return json.dumps({"type": kind, "object": rendered}).encode() + b"\n"

    def _seed(self, items: list[dict[str, Any]]) -> None:
        for obj in items:
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), self.handler.source_name(meta["name"]))
            self.derived.setdefault(key, {})[meta["name"]] = obj

    def _derived_events(self, change: Change) -> list[tuple[str, dict[str, Any]]]:
        """Diff the objects derived from the changed source against what was last seen."""
        key = (change.namespace, change.name)
        before = self.derived.get(key, {})
        after: dict[str, dict[str, Any]] = {}
        if change.event != "DELETED":
            after = self.handler.derived_objects(self.ctx, change.namespace, change.name) or {}
        self.derived[key] = after
        events: list[tuple[str, dict[str, Any]]] = []
        for name, obj in after.items():
            old = before.get(name)
            if old is None:
                events.append(("ADDED", obj))
            elif _content(old) != _content(obj):
                events.append(("MODIFIED", obj))
        for name, old in before.items():
            if name not in after:
                meta = {**old["metadata"], "resourceVersion": str(change.id)}
                events.append(("DELETED", {**old, "metadata": meta}))
        return events

    def _caught_up(self, change: Change) -> list[tuple[str, dict[str, Any]]]:
        """A view resumed from an older resourceVersion was seeded with the objects as they
        are now, so a change between that version and the seed cannot be diffed: its source's
        current objects are sent once as MODIFIED (a tag deleted in that window is missed)."""
        key = (change.namespace, change.name)
        if key in self.caught_up:
            return []
        self.caught_up.add(key)
        return [("MODIFIED", obj) for obj in self.derived.get(key, {}).values()]

    def _events_for(self, change: Change) -> list[tuple[str, dict[str, Any]]]:
        if self.handler.derived_view and change.id <= self.seeded_at:
            return self._caught_up(change)
        if self.handler.derived_view:
            return self._derived_events(change)
        loaded = self._load(change)
        return [] if loaded is None else [loaded]

    def _load(self, change: Change) -> tuple[str, dict[str, Any]] | None:
        if change.event == "DELETED":
            info = self.handler.info
            meta: dict[str, Any] = {"name": change.name, "resourceVersion": str(change.id)}
            if change.namespace:
                meta["namespace"] = change.namespace
            return "DELETED", {"kind": info.kind, "apiVersion": info.api_version, "metadata": meta}
        try:
            obj = self.handler.get(self.ctx, change.namespace, change.name)
        except ApiError:
            return None
        return change.event, obj

    async def events(self, timeout: float) -> AsyncIterator[bytes]:
        rv = self.opts.resource_version
        replay = rv in ("", "0")
        if replay or self.handler.derived_view:
            # A view also lists when resuming, to know which derived objects exist already.
            listed = await run_in_threadpool(
                self.handler.list,
                self.ctx,
                self.namespace,
                ListOptions(label_selector=self.opts.label_selector)
                if self.handler.derived_view
                else ListOptions(
                    label_selector=self.opts.label_selector, field_selector=self.opts.field_selector
                ),
            )
            self._seed(listed.items)
            for obj in listed.items if replay else ():
                if self._matches(obj):
                    yield self._event("ADDED", obj)
            after = self.seeded_at = int(listed.resource_version)
        if not replay:
            after = int(rv) if (rv.isascii() and rv.isdigit()) else 0
        keys = tuple(self.handler.watch_keys())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            batch = await run_in_threadpool(changes_after, self.db, keys, after, self.namespace)
            for change in batch:
                after = change.id
                for kind, obj in await run_in_threadpool(self._events_for, change):
                    if self._matches(obj):
                        yield self._event(kind, obj)
            if len(batch) < BATCH:
                await asyncio.sleep(POLL_SECONDS)


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    """An object without its resourceVersion (a view's version moves with its source's)."""
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}
