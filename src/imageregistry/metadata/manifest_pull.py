"""The manifest pull hot path: one SQL statement on one pooled DBAPI connection.

A manifest GET by tag or digest is the most frequent registry request. `ManifestPuller` answers it
with a single statement that resolves the repository, the tag's newest event (`items[0]`,
docs/behaviour.md#image-api-resources) and the linked manifest row, and that also reads the
namespace's `image.alauda.io/require-signatures` annotation, so the signature policy costs nothing
more unless it is switched on (then `signature_policy.signature_policy_allows` decides, as before);
reading it on every pull keeps it exact without any cache. The statement is sent as driver SQL,
skipping SQLAlchemy's compilation and the explicit transaction of `Database.read` (one statement is
one consistent snapshot). A miss returns None: the caller then takes the general path, which
explains *why* (unknown repository, tag or manifest) with the right error.

Pulls are recorded in `last_pulled` at most once a minute per manifest
(`PULL_RECORD_INTERVAL`, judged from the row just read), and never by the pull itself: a
pull only notes the time in `PullTimes`, an in-process buffer that keeps the newest time
per manifest, and the server writes the buffer in one transaction every
`pull_times_flush_seconds` (2 by default) and once more on shutdown. So the bookkeeping
costs a pull no write, repeated pulls of one manifest cost one row update, and a database
that refuses writes (or is busy) never fails a pull: the times stay buffered and go in
with a later flush. A crash (SIGKILL, power loss) loses the pull times of the last flush
interval.

Clients pull the same few tags over and over, so each puller remembers, per tag or digest, the
last row it read and what it made of it (`PulledManifest`): a row equal to the remembered one
is answered with the same value, without parsing its timestamp and fields again. The row is
still read every time; only its decoding is saved (docs/benchmarks.md, "Metrics on the
manifest GET"). At most `_DECODED_LIMIT` rows of manifests up to `_DECODED_MAX_BYTES` are
kept, so the memory stays bounded whatever is pulled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, or_, update
from sqlalchemy.exc import SQLAlchemyError

from imageregistry.metadata import signature_policy
from imageregistry.metadata.db import Database, DatabaseUnavailable
from imageregistry.metadata.registry_manifests import PULL_RECORD_INTERVAL
from imageregistry.metadata.tables import manifests

_DECODED_LIMIT = 256
_DECODED_MAX_BYTES = 64 * 1024

# The namespace's policy annotation, read in the same statement (dialect-specific JSON
# access; both are answered from the (resource, namespace, name) unique index).
_POLICY_SQLITE = (
    "(SELECT json_extract(o.body, '$.metadata.annotations.\"{a}\"') FROM objects o "
    "WHERE o.resource = 'namespaces' AND o.namespace = '' AND o.name = r.namespace)"
)
_POLICY_POSTGRES = (
    "(SELECT o.body -> 'metadata' -> 'annotations' ->> '{a}' FROM objects o "
    "WHERE o.resource = 'namespaces' AND o.namespace = '' AND o.name = r.namespace)"
)
_COLUMNS = "m.digest, m.media_type, m.content, m.last_pulled, {policy}"
_BY_TAG = (
    "SELECT {columns} FROM repositories r "
    "JOIN tag_events t ON t.repository_id = r.id "
    "JOIN repository_manifests rm ON rm.repository_id = r.id AND rm.digest = t.digest "
    "JOIN manifests m ON m.digest = t.digest "
    "WHERE r.namespace = {p} AND r.name = {p} AND t.id = "
    "(SELECT max(e.id) FROM tag_events e WHERE e.repository_id = r.id AND e.tag = {p})"
)
_BY_DIGEST = (
    "SELECT {columns} FROM repositories r "
    "JOIN repository_manifests rm ON rm.repository_id = r.id "
    "JOIN manifests m ON m.digest = rm.digest "
    "WHERE r.namespace = {p} AND r.name = {p} AND rm.digest = {p}"
)


log = logging.getLogger(__name__)
PENDING_LIMIT = 100_000  # distinct manifests buffered while the database refuses writes


class PullTimes:
    """Pull times waiting to be written: the newest per manifest digest, thread-safe."""

    def __init__(self, db: Database, limit: int = PENDING_LIMIT) -> None:
        self._db = db
        self._limit = limit
        self._pending: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._failing = False  # the last flush failed (logged once, until one succeeds)
        self._statement = (
            update(manifests)
            .where(
                and_(
                    manifests.c.digest == bindparam("pulled_digest"),
                    or_(
                        manifests.c.last_pulled.is_(None),
                        manifests.c.last_pulled < bindparam("pulled_at"),
                    ),
                )
            )
            .values(last_pulled=bindparam("pulled_at"))
        )

    def record(self, digest: str, when: datetime) -> None:
        """Note a pull (no I/O; safe on the event loop)."""
        with self._lock:
            self._merge({digest: when})

    def _merge(self, times: dict[str, datetime]) -> None:
        pending = self._pending
        for digest, when in times.items():
            known = pending.get(digest)
            if known is None:
                if len(pending) >= self._limit:
                    continue  # bounded: during a long outage, further manifests go unrecorded
                pending[digest] = when
            elif when > known:
                pending[digest] = when

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write the buffered times in one transaction; the number of manifests written.

        Never raises: when the database refuses (read-only, busy, gone) the times go back
        into the buffer for the next flush and the failure is logged once."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        rows = [{"pulled_digest": d, "pulled_at": t} for d, t in sorted(batch.items())]
        try:
            with self._db.write() as conn:
                conn.execute(self._statement, rows)
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            with self._lock:
                self._merge(batch)
            if not self._failing:
                self._failing = True
                log.warning("pull times not recorded yet, kept for the next try: %s", exc)
            return 0
        if self._failing:
            self._failing = False
            log.info("pull times recorded again")
        return len(rows)


@dataclass(frozen=True, slots=True)
class PulledManifest:
    digest: str
    media_type: str
    content: bytes
    last_pulled: datetime | None
    requires_signatures: bool
    extras: tuple[int, ...] = ()  # the values of `extra_columns`, NULL read as 0


def _as_datetime(value: Any) -> datetime | None:
    """SQLite hands back the stored text, PostgreSQL a datetime; both are UTC."""
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class ManifestPuller:
    """Reads manifests for pulls and caches the namespace signature policy per version."""

    def __init__(
        self, db: Database, pull_times: PullTimes, extra_columns: Sequence[str] = ()
    ) -> None:
        """`pull_times`: where pulls are noted (shared by every puller of the process).
        `extra_columns`: constant integer SQL expressions read in the same statement
        (e.g. change-log versions a caller keys its own caches on)."""
        self._db = db
        self.pull_times = pull_times
        self._extras = len(extra_columns)
        self._loop_connection: Any = None
        policy = (_POLICY_SQLITE if db.is_sqlite else _POLICY_POSTGRES).format(
            a=signature_policy.POLICY_ANNOTATION
        )
        columns = ", ".join([_COLUMNS.format(policy=policy), *extra_columns])
        placeholder = "?" if db.is_sqlite else "%s"
        self._by_tag = _BY_TAG.format(columns=columns, p=placeholder)
        self._by_digest = _BY_DIGEST.format(columns=columns, p=placeholder)
        # (tag, digest, namespace, stream) -> the last row read for it and its decoding
        self._decoded: dict[tuple[str | None, ...], tuple[Any, PulledManifest]] = {}

    def find(
        self,
        namespace: str,
        stream: str,
        digest: str | None,
        tag: str | None,
        *,
        on_loop: bool = False,
    ) -> PulledManifest | None:
        """The manifest a pull of `tag` (or `digest`) serves, or None when anything is missing.

        `on_loop`: the caller is the event loop thread (SQLite only), which then uses one
        connection of its own instead of a pool checkout per pull; SQLite in autocommit
        mode starts a fresh read snapshot for every statement, so it never reads stale.
        """
        params: tuple[str | None, ...]
        if tag is not None:
            sql, params = self._by_tag, (namespace, stream, tag)
        else:
            sql, params = self._by_digest, (namespace, stream, digest)
        if on_loop and self._db.is_sqlite:
            row = self._loop_cursor().execute(sql, params).fetchone()
        else:
            row = self._db.fetch_one_raw(sql, params)
        if row is None:
            return None
        key = (tag, digest, namespace, stream)
        known = self._decoded.get(key)
        if known is not None and known[0] == row:
            return known[1]
        pulled = self._decode(row)
        if len(pulled.content) <= _DECODED_MAX_BYTES:
            if len(self._decoded) >= _DECODED_LIMIT:
                self._decoded.clear()
            self._decoded[key] = (row, pulled)
        return pulled

    def _decode(self, row: Any) -> PulledManifest:
        policy = row[4]
        required = isinstance(policy, str) and policy.strip().lower() == "true"
        extras = tuple(int(v or 0) for v in row[5 : 5 + self._extras])
        return PulledManifest(
            str(row[0]), str(row[1]), bytes(row[2]), _as_datetime(row[3]), required, extras
        )

    def _loop_cursor(self) -> Any:
        if self._loop_connection is None:
            raw = self._db.engine.raw_connection()
            raw.detach()  # this process keeps it; the pool opens another in its place
            self._loop_connection = raw
        return self._loop_connection.cursor()

    def close(self) -> None:
        """Close the event loop's own connection, if one was opened."""
        if self._loop_connection is not None:
            self._loop_connection.close()
            self._loop_connection = None

    def policy_refusal(self, namespace: str, pulled: PulledManifest) -> str:
        """Why the namespace's signature policy refuses this pull ("" when allowed)."""
        if not pulled.requires_signatures:
            return ""
        with self._db.read() as conn:
            allowed, reason = signature_policy.signature_policy_allows(
                conn, namespace, pulled.digest
            )
        return "" if allowed else reason

    @staticmethod
    def mark_due(pulled: PulledManifest, now: datetime) -> bool:
        """Whether this pull must be recorded (none recorded in the last minute)."""
        return pulled.last_pulled is None or now - pulled.last_pulled >= PULL_RECORD_INTERVAL

    def mark_pulled(self, pulled: PulledManifest, now: datetime) -> None:
        """Note the pull for the next flush unless one was recorded less than a minute
        ago (no I/O: safe on the event loop, and never fails the pull)."""
        if self.mark_due(pulled, now):
            self.pull_times.record(pulled.digest, now)
