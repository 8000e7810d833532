"""Which unfinished multipart uploads in object storage are safe to abort.

A multipart upload the store still holds is either a write in progress or the remains of
a process that died mid-write; the store cannot tell which. Its start time decides first:
only writes started before the cutoff (`upload_max_age_seconds` for GC, the reconcile
grace for `gc --reconcile`) qualify. A write staging a segment of an upload session
(`uploads/<id>/...`) is then kept while that session has objects newer than the cutoff:
the session is alive, so its write may be too. This second check also guards against a
store that reports wrong start times (moto, the S3 emulator the tests use, reports every
upload as started in 2010).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol

from imageregistry.storage.driver import PendingWrite, StoredUpload

_SESSION = re.compile(r"uploads/([A-Za-z0-9-]{1,64})/")


class PendingWrites(Protocol):
    def iter_uploads(self) -> AsyncIterator[StoredUpload]: ...
    def iter_pending_writes(self) -> AsyncIterator[PendingWrite]: ...


async def stale_writes(store: PendingWrites, cutoff: datetime) -> list[PendingWrite]:
    """Unfinished writes started before `cutoff` that belong to no live upload session."""
    writes = [w async for w in store.iter_pending_writes() if w.initiated < cutoff]
    if not writes:
        return []
    live = {u.upload_id async for u in store.iter_uploads() if u.modified >= cutoff}

    def alive(write: PendingWrite) -> bool:
        match = _SESSION.match(write.key)
        return match is not None and match.group(1) in live

    return sorted((w for w in writes if not alive(w)), key=lambda w: (w.key, w.upload_id))
