"""Throttle failed password checks per source address and per username.

bcrypt is slow by design, which makes every password check an attacker can trigger a
lever on the server's CPU: a flood of Basic-auth requests with made-up credentials costs a
bcrypt each (unknown users are checked against a dummy hash so timing does not reveal
which names exist). `LoginThrottle` gives each source address and each username a token
bucket of `failures` checks that refills over `window` seconds; a check takes one before
bcrypt runs and gives it back when the password was right, so only failures spend the
budget and at most `failures` checks per key run at once. While a bucket is empty, a
password check for that source or user is refused before bcrypt runs, with the number of
seconds after which one more attempt is allowed (`authn.TooManyFailedLogins`: `429` with
`Retry-After` on every surface, docs/operations.md "Failed logins").

What is not throttled, on purpose: remembered password checks and tokens (Bearer, or Basic
whose password is a token) never reach bcrypt, so a user whose name is being attacked keeps
working through the token the client already holds. The buckets live in each worker
process (an attacker spread over W workers gets at most W times the budget) and the table
is bounded, evicting the least recently failed keys first.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_SIZE = 16384


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class LoginThrottle:
    """Token buckets of failed password checks, keyed by source address and by username."""

    def __init__(
        self,
        failures: int,
        window_seconds: float = 60.0,
        *,
        size: int = DEFAULT_SIZE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self._rate = failures / window_seconds if failures > 0 else 0.0
        self._size = size
        self._monotonic = monotonic
        self._lock = threading.Lock()  # checks run in worker threads
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.failures > 0

    def _level(self, key: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        bucket.tokens = min(self.failures, bucket.tokens + (now - bucket.stamp) * self._rate)
        bucket.stamp = now
        if bucket.tokens >= self.failures:  # full again: forget it
            del self._buckets[key]
            return None
        return bucket

    def acquire(self, source: str | None, username: str) -> int | None:
        """Take one check from both keys' buckets before bcrypt runs, or, when either is
        empty, take nothing and return the seconds until one comes back.

        Taking before the check (and `release` giving it back when the password was
        right) bounds the bcrypts running at once too: concurrent requests cannot all pass
        a check made before any of them failed."""
        if not self.enabled:
            return None
        now = self._monotonic()
        with self._lock:
            keys = _keys(source, username)
            buckets = [self._level(key, now) or _Bucket(float(self.failures), now) for key in keys]
            wait = max((1 - b.tokens) / self._rate for b in buckets)
            if wait > 0:
                return max(1, math.ceil(wait))
            for key, bucket in zip(keys, buckets, strict=True):
                bucket.tokens -= 1
                self._buckets[key] = bucket
                self._buckets.move_to_end(key)
            while len(self._buckets) > self._size:
                self._buckets.popitem(last=False)
        return None

    def release(self, source: str | None, username: str) -> None:
        """The check `acquire` paid for succeeded: give it back."""
        if not self.enabled:
            return
        now = self._monotonic()
        with self._lock:
            for key in _keys(source, username):
                bucket = self._level(key, now)
                if bucket is not None:
                    bucket.tokens = min(float(self.failures), bucket.tokens + 1)


def _keys(source: str | None, username: str) -> tuple[str, ...]:
    user_key = "user\0" + username
    return (user_key,) if not source else ("source\0" + source, user_key)
