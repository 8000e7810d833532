"""htpasswd users: parse an Apache htpasswd file (bcrypt entries only) and check passwords.

Only bcrypt (`$2y$`, `$2b$`, `$2a$`, as written by `htpasswd -B`) is accepted; MD5-crypt,
SHA-1 and crypt(3) entries are rejected with the line number, because they are too weak to
keep and silently ignoring them would lock the user out without a hint. Checking an unknown
user still runs bcrypt against a dummy hash of the same cost, so response time does not tell
which usernames exist. bcrypt is slow by design: callers exchange a password for a token once
rather than verifying on every request (docs/behaviour.md#access-control).

`HtpasswdFile` is what the server uses: it re-reads the file when it changes (checked at
most once a second), so `htpasswd -B FILE bob` or `htpasswd -D FILE alice` takes effect
without a restart. A file that no longer parses fails closed: no htpasswd user is accepted
until it is fixed, and the error is logged once per change.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import bcrypt

from imageregistry.configerror import ConfigurationError

log = logging.getLogger(__name__)

_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
# bcrypt only reads the first 72 bytes; Apache's htpasswd truncates the same way, and the
# bcrypt package refuses longer input instead of truncating.
_BCRYPT_MAX_BYTES = 72
_DEFAULT_COST = 10
# `htpasswd -B -C` accepts costs 4 to 17. A higher cost is refused: the unknown-user dummy
# check runs at the file's highest cost, so one cost-31 line would stall every worker at
# start and every failed login for hours.
_MIN_COST, _MAX_COST = 4, 17
# Modular-crypt bcrypt: version, two-digit cost, 22 salt characters (the last one carries
# only 2 bits, so it is one of `.Oeu`) and 31 hash characters of bcrypt's base64 alphabet.
# Anything else makes bcrypt raise "Invalid salt" at every login instead of at load time.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{31}")


class HtpasswdError(ConfigurationError):
    """The htpasswd file cannot be used as it is."""


def _cost(hashed: str) -> int:
    match = _BCRYPT_HASH.fullmatch(hashed)
    if match is None:
        raise ValueError("malformed bcrypt hash")
    cost = int(match.group(1))
    if not _MIN_COST <= cost <= _MAX_COST:
        raise ValueError(f"bcrypt cost {cost} is outside {_MIN_COST}..{_MAX_COST}")
    return cost


@functools.cache  # one per cost (4..17): a failed login never pays for making one
def _dummy_hash(cost: int) -> bytes:
    return bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds=cost))


@dataclass(frozen=True)
class Htpasswd:
    """The users of one htpasswd file; `users` maps username → bcrypt hash."""

    users: Mapping[str, bytes]
    _dummy: bytes = field(repr=False, hash=False, compare=False, default=b"")

    @classmethod
    def parse(cls, text: str, *, source: str = "htpasswd") -> Htpasswd:
        users: dict[str, bytes] = {}
        costs: list[int] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            where = f"{source}:{number}"
            if not sep or not user:
                raise HtpasswdError(f"{where}: expected 'user:hash'")
            if not hashed.startswith(_BCRYPT_PREFIXES):
                raise HtpasswdError(
                    f"{where}: user {user!r} has a non-bcrypt hash; only bcrypt entries "
                    "are supported (create them with 'htpasswd -B')"
                )
            try:
                costs.append(_cost(hashed))
            except ValueError as exc:
                raise HtpasswdError(f"{where}: user {user!r}: {exc}") from None
            if user in users:
                raise HtpasswdError(f"{where}: user {user!r} appears twice")
            users[user] = hashed.encode()
        cost = max(costs) if costs else _DEFAULT_COST
        return cls(users=MappingProxyType(users), _dummy=_dummy_hash(cost))

    @classmethod
    def load(cls, path: Path) -> Htpasswd:
        return cls.parse(path.read_text(encoding="utf-8"), source=str(path))

    def verify(self, username: str, password: str) -> bool:
        candidate = password.encode()[:_BCRYPT_MAX_BYTES]
        hashed = self.users.get(username)
        if hashed is None:
            bcrypt.checkpw(candidate, self._dummy or _dummy_hash(_DEFAULT_COST))
            return False
        return bcrypt.checkpw(candidate, hashed)

    def has_user(self, username: str) -> bool:
        return username in self.users

    def generation(self) -> int:
        return 0  # a parsed file never changes


_NOBODY = Htpasswd(users=MappingProxyType({}))


class HtpasswdFile:
    """An htpasswd file that is re-read when it changes (size, mtime or inode)."""

    def __init__(
        self,
        path: Path,
        *,
        check_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._interval = check_interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._current = Htpasswd.load(path)  # at start an unusable file is an error
        self._checked = monotonic()
        self._generation = 0

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def current(self) -> Htpasswd:
        now = self._monotonic()
        if now - self._checked < self._interval:
            return self._current
        with self._lock:
            if now - self._checked >= self._interval:
                self._checked = now
                signature = self._stat()
                if signature != self._signature:
                    self._signature = signature
                    self._current = self._reload()
                    self._generation += 1
        return self._current

    def _reload(self) -> Htpasswd:
        try:
            loaded = Htpasswd.load(self._path)
        except (OSError, UnicodeDecodeError, HtpasswdError) as exc:
            log.error(
                "htpasswd file %s is unusable, no password logins until fixed: %s", self._path, exc
            )
            return _NOBODY
        log.info("htpasswd file %s reloaded: %d users", self._path, len(loaded.users))
        return loaded

    def verify(self, username: str, password: str) -> bool:
        return self.current().verify(username, password)

    def has_user(self, username: str) -> bool:
        return self.current().has_user(username)

    def generation(self) -> int:
        """Bumped by every re-read (checked at most once per `check_interval`)."""
        self.current()
        return self._generation
