"""The ``notifications:`` settings block: endpoints in the shape of distribution's.

The block is distribution's ``notifications`` section (``endpoints`` with ``name``,
``disabled``, ``url``, ``headers``, ``timeout``, ``threshold``, ``backoff``,
``ignoredmediatypes`` and ``ignore: {mediatypes, actions}``), so an existing
configuration can be pasted in; ``maxbackoff`` is ours (the retry delay doubles up to
it). Durations are Go durations (``500ms``, ``1s``, ``2m``, ``1h30m``) or numbers of
seconds. ``config.py`` validates the block when settings load and keeps it as given;
`endpoints` builds the typed values the server uses. Header values may be credentials:
`Endpoint.__repr__` leaves them out and errors never quote them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from imageregistry.configerror import ConfigurationError

ACTIONS = ("push", "pull", "delete", "mount")
DEFAULT_TIMEOUT = 5.0
DEFAULT_THRESHOLD = 3
DEFAULT_BACKOFF = 1.0
DEFAULT_MAX_BACKOFF = 60.0
_BLOCK_KEYS = {"endpoints"}
_ENDPOINT_KEYS = {
    "name",
    "disabled",
    "url",
    "headers",
    "timeout",
    "threshold",
    "backoff",
    "maxbackoff",
    "ignoredmediatypes",
    "ignore",
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class NotificationConfigError(ConfigurationError):
    """The ``notifications:`` block is malformed (the message never quotes header values)."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    timeout: float = DEFAULT_TIMEOUT
    threshold: int = DEFAULT_THRESHOLD
    backoff: float = DEFAULT_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    ignored_media_types: frozenset[str] = frozenset()
    ignored_actions: frozenset[str] = frozenset()

    def wants(self, action: str, media_type: str | None) -> bool:
        """Whether an event passes this endpoint's filters (distribution's: an event
        whose target media type or action is ignored is not sent)."""
        if action in self.ignored_actions:
            return False
        return not (media_type and media_type in self.ignored_media_types)

    def retry_delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th consecutive failed delivery: retried at
        once below `threshold`, then `backoff` doubling per further failure, at most
        `max_backoff`."""
        if failures < self.threshold:
            return 0.0
        return float(min(self.backoff * 2 ** min(failures - self.threshold, 32), self.max_backoff))


def parse_duration(value: Any, where: str) -> float:
    """Seconds from a Go duration string or a number of seconds."""
    if isinstance(value, bool):
        raise NotificationConfigError(f"{where}: expected a duration such as 1s or 500ms")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise NotificationConfigError(
                    f"{where}: expected a duration such as 1s or 500ms, got {text[:40]!r}"
                )
            seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    if not 0 < seconds <= 86400:
        raise NotificationConfigError(f"{where}: expected more than 0 and at most 24h")
    return seconds


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise NotificationConfigError(f"{where}: expected a list of strings")
    return list(value)


def _headers(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise NotificationConfigError(f"{where}: expected a mapping of header names to values")
    out: list[tuple[str, str]] = []
    for name, values in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
            raise NotificationConfigError(f"{where}: {str(name)[:40]!r} is not a header name")
        items = [values] if isinstance(values, str) else values
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise NotificationConfigError(f"{where}.{name}: expected a string or list of strings")
        for item in items:
            if "\r" in item or "\n" in item:
                raise NotificationConfigError(f"{where}.{name}: a value holds a line break")
            out.append((name, item))
    return tuple(out)


def _endpoint(raw: Any, index: int) -> Endpoint | None:
    where = f"notifications.endpoints[{index}]"
    if not isinstance(raw, Mapping):
        raise NotificationConfigError(f"{where}: expected a mapping")
    keys = {str(k).lower(): v for k, v in raw.items()}
    unknown = sorted(set(keys) - _ENDPOINT_KEYS)
    if unknown:
        raise NotificationConfigError(f"{where}: unknown option {unknown[0]!r}")
    name = keys.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise NotificationConfigError(
            f"{where}.name: expected 1-128 letters, digits, '.', '_' or '-'"
        )
    where = f"notifications.endpoints[{name}]"
    url = keys.get("url")
    if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
        raise NotificationConfigError(f"{where}.url: expected an http:// or https:// URL")
    threshold = keys.get("threshold", DEFAULT_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        raise NotificationConfigError(f"{where}.threshold: expected an integer, 0 or more")
    ignore = keys.get("ignore") or {}
    if not isinstance(ignore, Mapping) or set(map(str, ignore)) - {"mediatypes", "actions"}:
        raise NotificationConfigError(f"{where}.ignore: expected mediatypes and/or actions")
    actions = _strings(ignore.get("actions"), f"{where}.ignore.actions")
    for action in actions:
        if action not in ACTIONS:
            raise NotificationConfigError(
                f"{where}.ignore.actions: {action[:20]!r} is not one of {', '.join(ACTIONS)}"
            )
    media_types = _strings(keys.get("ignoredmediatypes"), f"{where}.ignoredmediatypes")
    media_types += _strings(ignore.get("mediatypes"), f"{where}.ignore.mediatypes")
    disabled = keys.get("disabled", False)
    if not isinstance(disabled, bool):
        raise NotificationConfigError(f"{where}.disabled: expected true or false")
    endpoint = Endpoint(
        name=name,
        url=url,
        headers=_headers(keys.get("headers"), f"{where}.headers"),
        timeout=parse_duration(keys.get("timeout", DEFAULT_TIMEOUT), f"{where}.timeout"),
        threshold=threshold,
        backoff=parse_duration(keys.get("backoff", DEFAULT_BACKOFF), f"{where}.backoff"),
        max_backoff=parse_duration(
            keys.get("maxbackoff", DEFAULT_MAX_BACKOFF), f"{where}.maxbackoff"
        ),
        ignored_media_types=frozenset(media_types),
        ignored_actions=frozenset(actions),
    )
    return None if disabled else endpoint


def endpoints(block: Mapping[str, Any]) -> tuple[Endpoint, ...]:
    """The enabled endpoints of a ``notifications:`` block (`NotificationConfigError`)."""
    if not isinstance(block, Mapping):
        raise NotificationConfigError("notifications: expected a mapping")
    unknown = sorted(set(map(str, block)) - _BLOCK_KEYS)
    if unknown:
        raise NotificationConfigError(f"notifications: unknown option {unknown[0]!r}")
    raw = block.get("endpoints") or []
    if not isinstance(raw, list):
        raise NotificationConfigError("notifications.endpoints: expected a list")
    found = [_endpoint(item, i) for i, item in enumerate(raw)]
    enabled = tuple(e for e in found if e is not None)
    names = [e.name for e in enabled]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise NotificationConfigError(f"notifications.endpoints: {duplicate!r} is named twice")
    return enabled


def validate_block(block: Any) -> dict[str, Any]:
    """What ``config.py`` keeps: the block as given, once it parses."""
    if not isinstance(block, Mapping):
        raise NotificationConfigError("notifications: expected a mapping")
    endpoints(block)
    return dict(block)
