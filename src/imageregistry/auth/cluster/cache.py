"""A bounded, thread-safe memory of review answers with one lifetime per outcome.

Like kube-apiserver's webhook caches: a positive answer (authenticated, allowed) and a
negative one (rejected token, denied) live for separate times, the least recently used
entry goes first when the cache is full, and only answers are stored, never failures
to get one. Keys are SHA-256 digests, so a token never sits in memory as a key.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class DecisionCache(Generic[V]):
    def __init__(
        self,
        positive_ttl: float,
        negative_ttl: float,
        size: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.positive_ttl = positive_ttl
        self.negative_ttl = negative_ttl
        self.size = size
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[V, float]] = OrderedDict()

    def get(self, key: str) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            value, deadline = entry
            if self._monotonic() >= deadline:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: V, positive: bool) -> None:
        ttl = self.positive_ttl if positive else self.negative_ttl
        if ttl <= 0 or self.size <= 0:
            return
        with self._lock:
            self._entries[key] = (value, self._monotonic() + ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class _Call(Generic[V]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None


class Coalescer(Generic[V]):
    """One review in flight per key: threads asking about the same token or decision at
    the same moment (a client pulling layers in parallel with a new token) wait for the
    first one's answer instead of each asking the cluster, as kube-apiserver's cached
    token authenticator does. Waiters share an error too; it is not remembered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Call[V]] = {}

    def run(self, key: str, work: Callable[[], V]) -> V:
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
        if not leader:
            call.done.wait()
            if call.error is not None:
                raise call.error
            assert call.value is not None
            return call.value
        try:
            call.value = work()
            return call.value
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
