"""htpasswd users: parse an Apache htpasswd file (bcrypt entries only) and check passwords.

Only bcrypt (`$2y$`, `$2b$`, `$2a$`, as written by `htpasswd -B`) is accepted; MD5-crypt,
SHA-1 and crypt(3) entries are rejected with the line number, because they are too weak to
keep and silently ignoring them would lock the user out without a hint. Checking an unknown
user still runs bcrypt against a dummy hash of the same cost, so response time does not tell
which usernames exist. bcrypt is slow by design: callers exchange a password for a token once
rather than verifying on every request (behaviour.md §3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import bcrypt

_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
# bcrypt only reads the first 72 bytes; Apache's htpasswd truncates the same way, and the
# bcrypt package refuses longer input instead of truncating.
_BCRYPT_MAX_BYTES = 72
_DEFAULT_COST = 10


class HtpasswdError(ValueError):
    """The htpasswd file cannot be used as it is."""


def _cost(hashed: str) -> int:
    parts = hashed.split("$")
    if len(parts) < 4 or not parts[2].isdigit() or len(parts[3]) != 53:
        raise ValueError("malformed bcrypt hash")
    return int(parts[2])


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
            except ValueError:
                raise HtpasswdError(f"{where}: user {user!r} has a malformed bcrypt hash") from None
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
