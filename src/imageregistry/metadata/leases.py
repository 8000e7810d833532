"""Named leases in the `leases` table: which replica runs a scheduled job right now.

Every replica runs the loops of the scheduled jobs (scheduled pruning, change-log
compaction); a job acts only while its replica holds the job's unexpired lease, renewed on
each tick, so one replica acts at a time and another takes over when the holder stops
renewing (docs/architecture.md#built-for-several-replicas).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from imageregistry.metadata.db import Database, as_utc
from imageregistry.metadata.tables import leases


def take_lease(db: Database, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Acquire or renew the lease `name`; False while another unexpired holder has it."""
    try:
        with db.write() as conn:
            query = select(leases.c.holder, leases.c.expires).where(leases.c.name == name)
            if not db.is_sqlite:
                query = query.with_for_update()
            row = conn.execute(query).first()
            if row is None:
                conn.execute(insert(leases).values(name=name, holder=holder, expires=now + ttl))
                return True
            if row.holder != holder and as_utc(row.expires) > now:
                return False
            conn.execute(
                update(leases).where(leases.c.name == name).values(holder=holder, expires=now + ttl)
            )
            return True
    except IntegrityError:  # another replica inserted the row first
        return False


def release_lease(db: Database, name: str, holder: str) -> None:
    with db.write() as conn:
        conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))
