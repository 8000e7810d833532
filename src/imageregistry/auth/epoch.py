"""A file that tells every worker of a data dir to forget remembered authentications.

Each worker process keeps its own short-lived cache of successful authentications
(`authn.AuthCache`). When one of them deletes an identity holder (a service account or a
namespace), `bump` writes new random bytes into this small file; every worker has the file
mapped into its memory (`mmap`, shared) and compares those bytes with the ones it saw last
before trusting its cache (`changed`), and empties the cache when they differ. So on one
server a deleted account's token stops at once on every worker, not after the cache's few
seconds, and the check costs a memory read, not a system call, on every authenticated
request (docs/benchmarks.md, "Metrics on the manifest GET"). Replicas on other machines
share only the database and still rely on the cache's lifetime; so does a data dir on a
network filesystem, where a shared mapping need not see another machine's writes.

A data dir that cannot hold the file is logged once: `changed` then never fires and the
other workers fall back to their caches' lifetime, as they would for a failed `bump`.
"""

from __future__ import annotations

import logging
import mmap
import os
from pathlib import Path

log = logging.getLogger(__name__)

_SIZE = 8


class IdentityEpoch:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._map = self._open()
        self._seen = self._read()

    def _open(self) -> mmap.mmap | None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if os.fstat(fd).st_size < _SIZE:  # new (or an older version's empty file)
                    os.ftruncate(fd, _SIZE)
                return mmap.mmap(fd, _SIZE)
            finally:
                os.close(fd)
        except (OSError, ValueError) as exc:
            log.warning("cannot share forgotten identities between workers: %s", exc)
            return None

    def _read(self) -> bytes:
        return b"" if self._map is None else self._map[:_SIZE]

    def changed(self) -> bool:
        """True once after another process (or this one) bumped the file."""
        now = self._read()
        if now == self._seen:
            return False
        self._seen = now
        return True

    def bump(self) -> None:
        """Tell the other workers to forget (the caller empties its own cache). A data dir
        that cannot take it is logged, not raised: the deletion that asked has already
        happened, and other workers then fall back to their caches' lifetime."""
        if self._map is None:
            log.warning("cannot tell other workers to forget cached identities: no epoch file")
            return
        self._map[:_SIZE] = os.urandom(_SIZE)
        self._seen = self._read()
