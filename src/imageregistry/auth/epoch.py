"""A file that tells every worker of a data dir to forget remembered authentications.

Each worker process keeps its own short-lived cache of successful authentications
(`authn.AuthCache`). When one of them deletes an identity holder (a service account or a
namespace), `bump` replaces this file, giving it a new inode; every worker checks the file
with one `stat` before trusting its cache (`changed`), and empties the cache when the file
moved. So on one server a deleted account's token stops at once on every worker, not after
the cache's few seconds. Replicas on other machines share only the database and still rely
on the cache's lifetime.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class IdentityEpoch:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._seen = self._read()

    def _read(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def changed(self) -> bool:
        """True once after another process (or this one) bumped the file."""
        now = self._read()
        if now == self._seen:
            return False
        self._seen = now
        return True

    def bump(self) -> None:
        """Replace the file (new inode, so a change is seen even within one mtime tick).
        A data dir that cannot take it is logged, not raised: the deletion that asked has
        already happened, and other workers then fall back to their caches' lifetime."""
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=".identity-epoch-")
            os.close(fd)
            os.replace(temporary, self._path)
        except OSError as exc:
            log.warning("cannot tell other workers to forget cached identities: %s", exc)
        self._seen = self._read()
