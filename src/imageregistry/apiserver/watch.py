"""`watch=true`: newline-delimited JSON watch events from the `changes` log.

The `changes` table's id is the database-wide resourceVersion, so a watch from version N is
"every change row with id > N for this resource", which works the same on one process or many
replicas sharing a database. A watch without a resourceVersion (or "0") first replays the
current objects as ADDED, as kube-apiserver does. With a Table Accept header each object is
a one-row Table, columns only in the first event (as upstream).

Where the changes come from (docs/architecture.md#watches): recent ones from the process's
shared `ChangeFeed` in memory; older ones from the log, one query per page, under one of the
feed's few load slots. Events are sent a page at a time: the changes of one object within a
page become one event carrying the object as it is when the page is read (one read of all the
page's objects), which is what a client holding the latest state needs.

A resourceVersion older than the compacted history (`watch_history_seconds`) cannot be
replayed: as kube-apiserver does, the watch answers `200` with one `ERROR` event holding a
`410 Expired` Status and ends; client-go reflectors then list again, and kubectl prints
`Error from server (Expired)`. With `allowWatchBookmarks=true` a caught-up watch sends a
`BOOKMARK` with the current resourceVersion every `BOOKMARK_SECONDS` and once more before
it closes at `timeoutSeconds`, so a client watching a quiet resource resumes from a version
that is still in the history.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from imageregistry.apiserver.resource import ListOptions, RequestContext, ResourceHandler
from imageregistry.apiserver.selectors import field_predicate, label_predicate
from imageregistry.apiserver.status import expired
from imageregistry.changefeed import ChangeFeed, FeedNotRunning, WatchSlot
from imageregistry.httpinput import parse_int
from imageregistry.metadata.changelog import Change, changes_after, compaction_mark
from imageregistry.metadata.db import Database

PAGE = 500  # changes per log query (and per batch of object reads)
BOOKMARK_SECONDS = 60.0  # kube-apiserver's bookmark frequency

Event = tuple[str, dict[str, Any]]


class WatchResponse(StreamingResponse):
    """A watch's stream; its `WatchSlot` is freed however the stream ends (timeout, client
    gone, server shutting down)."""

    def __init__(self, content: AsyncIterator[bytes], slot: WatchSlot) -> None:
        super().__init__(content, media_type="application/json")
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


class WatchStream:
    """One watch request's event source."""

    def __init__(
        self,
        db: Database,
        feed: ChangeFeed,
        handler: ResourceHandler,
        ctx: RequestContext,
        namespace: str,
        opts: ListOptions,
        render: Callable[[dict[str, Any], bool], dict[str, Any]],
        *,
        bookmarks: bool = False,
    ) -> None:
        self.db = db
        self.feed = feed
        self.handler = handler
        self.ctx = ctx
        self.namespace = namespace
        self.opts = opts
        self.render = render
        self.bookmarks = bookmarks
        self.keys = tuple(handler.watch_keys())
        self.labels = label_predicate(opts.label_selector) if opts.label_selector else None
        self.fields = field_predicate(opts.field_selector) if opts.field_selector else None
        self.first = True
        # derived views: (namespace, source name) -> the objects last seen, by name
        self.derived: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.seeded_at = 0
        self.caught_up: set[tuple[str, str]] = set()

    # --- rendering -----------------------------------------------------------------------

    def _matches(self, obj: dict[str, Any]) -> bool:
        return not (
            (self.labels and not self.labels(obj)) or (self.fields and not self.fields(obj))
        )

    def _event(self, kind: str, obj: dict[str, Any]) -> bytes:
        rendered = self.render(obj, self.first)
        self.first = False
        return _line(kind, rendered)

    def _bookmark(self, version: int) -> bytes:
        info = self.handler.info
        meta = {"resourceVersion": str(version)}
        obj = {"kind": info.kind, "apiVersion": info.api_version, "metadata": meta}
        return _line("BOOKMARK", obj)

    # --- derived views (ImageStreamTags over ImageStreams) -------------------------------

    def _seed(self, items: list[dict[str, Any]]) -> None:
        for obj in items:
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), self.handler.source_name(meta["name"]))
            self.derived.setdefault(key, {})[meta["name"]] = obj

    def _derived_events(self, change: Change) -> list[Event]:
        """Diff the objects derived from the changed source against what was last seen."""
        key = (change.namespace, change.name)
        before = self.derived.get(key, {})
        after: dict[str, dict[str, Any]] = {}
        if change.event != "DELETED":
            after = self.handler.derived_objects(self.ctx, change.namespace, change.name) or {}
        self.derived[key] = after
        events: list[Event] = []
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

    def _caught_up(self, change: Change) -> list[Event]:
        """A view resumed from an older resourceVersion was seeded with the objects as they
        are now, so a change between that version and the seed cannot be diffed: its source's
        current objects are sent once as MODIFIED (a tag deleted in that window is missed)."""
        key = (change.namespace, change.name)
        if key in self.caught_up:
            return []
        self.caught_up.add(key)
        return [("MODIFIED", obj) for obj in self.derived.get(key, {}).values()]

    # --- one page of changes -------------------------------------------------------------

    def _page_events(self, page: list[Change]) -> list[Event]:
        """The events of a page: one per changed object, its objects read together."""
        merged = _merge(page)
        if self.handler.derived_view:
            events: list[Event] = []
            for change in merged:
                if change.id <= self.seeded_at:
                    events += self._caught_up(change)
                else:
                    events += self._derived_events(change)
            return events
        wanted = [(c.namespace, c.name) for c in merged if c.event != "DELETED"]
        found = self.handler.get_many(self.ctx, wanted) if wanted else {}
        events = []
        for change in merged:
            if change.event == "DELETED":
                events.append(("DELETED", self._deleted(change)))
            elif (obj := found.get((change.namespace, change.name))) is not None:
                events.append((change.event, obj))
        return events

    def _deleted(self, change: Change) -> dict[str, Any]:
        info = self.handler.info
        meta: dict[str, Any] = {"name": change.name, "resourceVersion": str(change.id)}
        if change.namespace:
            meta["namespace"] = change.namespace
        return {"kind": info.kind, "apiVersion": info.api_version, "metadata": meta}

    def _from_log(self, after: int, through: int) -> tuple[list[Change], int, int]:
        """One page of this watch's changes after `after` from the log, the version the page
        reaches, and the compaction mark read after the page (so a page read before rows
        were deleted is still checked against the new mark)."""
        with self.db.read() as conn:
            page = changes_after(
                conn, after, PAGE, through=through, resources=self.keys, namespace=self.namespace
            )
            mark = compaction_mark(conn)
        reached = page[-1].id if len(page) == PAGE else max(after, through)
        return page, reached, mark

    # --- the stream ----------------------------------------------------------------------

    async def events(self, timeout: float) -> AsyncIterator[bytes]:
        try:
            async for line in self._events(timeout):
                yield line
        except FeedNotRunning:  # the server is shutting down: end the stream
            return

    async def _events(self, timeout: float) -> AsyncIterator[bytes]:
        rv = self.opts.resource_version
        replay = rv in ("", "0")
        after = 0
        if replay or self.handler.derived_view:
            # A view also lists when resuming, to know which derived objects exist already.
            async with self.feed.load_slot():
                listed = await run_in_threadpool(self._list)
            self._seed(listed.items)
            for obj in listed.items if replay else ():
                if self._matches(obj):
                    yield self._event("ADDED", obj)
            after = self.seeded_at = int(listed.resource_version)
        if not replay:
            after = parse_int(rv, "resourceVersion")  # checked by `ResourceVerbs.list_options`
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_bookmark = loop.time() + BOOKMARK_SECONDS
        while (now := loop.time()) < deadline:
            live = self.feed.since(after, self.keys, self.namespace)
            if live is None:  # behind what the feed holds: read the log
                async with self.feed.load_slot():
                    page, reached, mark = await run_in_threadpool(
                        self._from_log, after, self.feed.head
                    )
                if after < mark:
                    error = expired(f"too old resource version: {after} ({mark})")
                    yield _line("ERROR", error.to_status())
                    return
            else:
                page, head = live
                reached = max(after, head)
            if page:
                async with self.feed.load_slot():
                    events = await run_in_threadpool(self._page_events, page)
                for kind, obj in events:
                    if self._matches(obj):
                        yield self._event(kind, obj)
            after = reached
            if self.bookmarks and now >= next_bookmark:
                yield self._bookmark(after)
                next_bookmark = now + BOOKMARK_SECONDS
            if live is not None:
                wake = min(deadline, next_bookmark if self.bookmarks else deadline)
                await self.feed.wait_past(after, wake - loop.time())
        if self.bookmarks:
            yield self._bookmark(after)

    def _list(self) -> Any:
        if self.handler.derived_view:
            opts = ListOptions(label_selector=self.opts.label_selector)
        else:
            opts = ListOptions(
                label_selector=self.opts.label_selector, field_selector=self.opts.field_selector
            )
        return self.handler.list(self.ctx, self.namespace, opts)


def _line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def _merge(page: list[Change]) -> list[Change]:
    """One change per object, at the place of its last change in the page: DELETED if it was
    deleted last, ADDED if the watch had not seen it before the page (added, or deleted and
    added again, within the page), else MODIFIED."""
    last: dict[tuple[str, str], Change] = {}
    added: set[tuple[str, str]] = set()
    for change in page:
        key = (change.namespace, change.name)
        if change.event == "ADDED":
            added.add(key)
        last.pop(key, None)  # re-insert: dicts keep insertion order
        last[key] = change
    merged = []
    for key, change in last.items():
        if change.event != "DELETED" and key in added and change.event != "ADDED":
            change = Change(change.id, change.resource, change.namespace, change.name, "ADDED")
        merged.append(change)
    return merged


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    """An object without its resourceVersion (a view's version moves with its source's)."""
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}
