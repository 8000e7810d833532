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

    def _matches(self, obj: dict[str, Any]) -> bool:
        return not (
            (self.labels and not self.labels(obj)) or (self.fields and not self.fields(obj))
        )

    def _event(self, kind: str, obj: dict[str, Any]) -> bytes:
        rendered = self.render(obj, self.first)
        self.first = False
        return json.dumps({"type": kind, "object": rendered}).encode() + b"\n"

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
        if rv in ("", "0"):
            listed = await run_in_threadpool(
                self.handler.list,
                self.ctx,
                self.namespace,
                ListOptions(
                    label_selector=self.opts.label_selector, field_selector=self.opts.field_selector
                ),
            )
            for obj in listed.items:
                yield self._event("ADDED", obj)
            after = int(listed.resource_version)
        else:
            after = int(rv) if rv.isdigit() else 0
        keys = tuple(self.handler.watch_keys())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            batch = await run_in_threadpool(changes_after, self.db, keys, after, self.namespace)
            for change in batch:
                after = change.id
                loaded = await run_in_threadpool(self._load, change)
                if loaded is not None and self._matches(loaded[1]):
                    yield self._event(*loaded)
            if len(batch) < BATCH:
                await asyncio.sleep(POLL_SECONDS)
