"""What the request handlers call: events into the outbox, in the transaction of the change.

`Notifier` is built once per process by `server.build_services` (held by `Services`). A
handler makes an `EventFactory` for its request (`factory`: the request id and caller of
`observability.requestinfo`, the peer, this server's `Source`), builds the
events of what it is about to change and passes `emit(...)` to the metadata call; the
metadata transaction calls it on its own connection, so the events are committed with the
change or not at all (`metadata.outbox`). Each endpoint's filters are applied here: a row
is written only for the endpoints that want the event.

Pulls change nothing, so there is no transaction to join: `pulled` keeps their events in
a bounded buffer that `flush_pulls` writes in one transaction every half second (a crash
loses at most that buffer; a refused write keeps it for the next flush). A write with
events flushes the buffer first (`oci.notify.settle_pulls`), so a pull this process
served before a push or delete is queued before it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from imageregistry.auth.identity import UserInfo
from imageregistry.clock import Clock
from imageregistry.metadata.db import Database, DatabaseUnavailable
from imageregistry.metadata.outbox import Emit, Outgoing, enqueue
from imageregistry.notifications.config import Endpoint
from imageregistry.notifications.events import Event, EventFactory, Source
from imageregistry.observability import requestid, requestinfo

log = logging.getLogger(__name__)
PULL_BUFFER = 10_000  # pull events kept for the next flush; the oldest go beyond this


class Notifier:
    def __init__(
        self,
        db: Database,
        endpoints: Sequence[Endpoint],
        source: Source,
        public_url: str,
        clock: Clock,
    ) -> None:
        self.db = db
        self.endpoints = tuple(endpoints)
        self.source = source
        self.public_url = public_url
        self.clock = clock
        self.enabled = bool(self.endpoints)
        self.wants_pulls = any("pull" not in e.ignored_actions for e in self.endpoints)
        self._pulls: deque[Event] = deque(maxlen=PULL_BUFFER)
        self._lock = threading.Lock()
        self.wake: Callable[[], None] = lambda: None  # set by the sender of this process

    def factory(self, scope: Mapping[str, Any], user: UserInfo | None) -> EventFactory:
        """The events of the request being handled: its id and (when the handler does not
        name it) its caller come from the request's `RequestInfo`, the record the audit log
        reads too."""
        info = requestinfo.current_info()
        request_id = info.request_id if info is not None else requestid.current.get()
        if user is None and info is not None:
            user = info.acting_user
        return EventFactory.create(
            scope, request_id, user, self.source, self.public_url, self.clock()
        )

    def _outgoing(self, events: Sequence[Event]) -> list[Outgoing]:
        return [
            Outgoing(
                e.id,
                e.payload(),
                tuple(p.name for p in self.endpoints if p.wants(e.action, e.media_type)),
            )
            for e in events
        ]

    def write(self, conn: Connection, events: Sequence[Event]) -> None:
        """Add `events` (in order) to the outbox on `conn`, inside the caller's transaction."""
        if not self.enabled or not events:
            return
        by_repository: dict[str, list[Event]] = {}
        for event in events:
            by_repository.setdefault(event.repository, []).append(event)
        now = self.clock()
        for repository in sorted(by_repository):  # one lock order for every transaction
            enqueue(conn, repository, self._outgoing(by_repository[repository]), now)

    def emit(self, events: Sequence[Event]) -> Emit | None:
        """The hook a metadata write runs in its transaction; None when nothing is sent."""
        if not self.enabled or not events:
            return None
        frozen = list(events)
        return lambda conn: self.write(conn, frozen)

    def committed(self) -> None:
        """A write with events committed: let this process's sender look now."""
        if self.enabled:
            self.wake()

    # --- pulls ---------------------------------------------------------------------------

    def pulled(self, event: Event) -> None:
        if self.wants_pulls:
            with self._lock:
                self._pulls.append(event)

    @property
    def has_pulls(self) -> bool:
        return bool(self._pulls)

    def flush_pulls(self) -> int:
        with self._lock:
            events = list(self._pulls)
            self._pulls.clear()
        if not events:
            return 0
        try:
            with self.db.write() as conn:
                self.write(conn, events)
        except DatabaseUnavailable:
            with self._lock:  # keep them for the next flush, oldest first
                self._pulls.extendleft(reversed(events))
            return 0
        except Exception:
            log.exception("pull events could not be recorded; %d dropped", len(events))
            return 0
        self.wake()
        return len(events)
