"""Prune options: every flag of `ac adm prune images` as one value, plus Go-style durations.

docs/behaviour.md#ac-adm-prune-images lists the flags. The CLI and the scheduled pruner both build a
`PruneOptions`; it crosses the wire as the `spec` of an `imageprunes` request, so the
value converts to and from that JSON shape here and nowhere else. Durations use Go's
`time.ParseDuration` syntax (`72h`, `90m`, `1h30m`, `1.5h`, `300ms`) because that is what
administrators of the system this replaces type; an unknown unit is an error rather than
a guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

# Go time.ParseDuration units, in nanoseconds.
_UNITS_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class InvalidOptions(ValueError):
    """A prune option is malformed; the message names the option."""


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration such as `72h`, `90m`, `1h30m` or `0`."""
    raw = text.strip()
    body = raw.lstrip("+-")
    if raw.startswith("-"):
        raise InvalidOptions(f"invalid duration {text!r}: must not be negative")
    if body == "0":
        return timedelta(0)
    if not body:
        raise InvalidOptions(f"invalid duration {text!r}")
    pos, total_ns = 0, 0.0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise InvalidOptions(
                f"invalid duration {text!r}: expected a number and a unit (ns, us, ms, s, m, h)"
            )
        total_ns += float(match.group(1)) * _UNITS_NS[match.group(2)]
        pos = match.end()
    try:  # a huge number of hours (from an API request) is inf or beyond timedelta
        return timedelta(microseconds=total_ns / 1000)
    except OverflowError:
        raise InvalidOptions(f"invalid duration {text[:40]!r}: out of range") from None


def format_duration(value: timedelta) -> str:
    """Render like Go's Duration.String for whole seconds: `72h0m0s`, `1h30m0s`, `0s`."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(frozen=True)
class PruneOptions:
    """What to prune; defaults are those of `ac adm prune images`
    (docs/behaviour.md#ac-adm-prune-images).
    """

    keep_tag_revisions: int = 3
    keep_younger_than: timedelta = timedelta(minutes=60)
    whitelist: tuple[str, ...] = ()
    all: bool = False
    prune_registry: bool = False
    registry_url: str = ""
    ignore_invalid_refs: bool = False
    # Image references in use (from --keep-referenced-from and/or a cluster).
    keep_referenced: tuple[str, ...] = ()
    catalog_page_size: int = 0  # accepted for compatibility; the server plans in one query

    def __post_init__(self) -> None:
        if self.keep_tag_revisions < 0:
            raise InvalidOptions("keepTagRevisions must not be negative")
        for pattern in self.whitelist:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InvalidOptions(
                    f"whitelist: invalid regular expression {pattern!r}: {exc}"
                ) from None

    def to_spec(self) -> dict[str, Any]:
        return {
            "keepTagRevisions": self.keep_tag_revisions,
            "keepYoungerThan": format_duration(self.keep_younger_than),
            "whitelist": list(self.whitelist),
            "all": self.all,
            "pruneRegistry": self.prune_registry,
            "registryURL": self.registry_url,
            "ignoreInvalidRefs": self.ignore_invalid_refs,
            "keepReferenced": list(self.keep_referenced),
            "catalogPageSize": self.catalog_page_size,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> PruneOptions:
        """Build from an `imageprunes` spec; missing keys take the CLI defaults."""
        try:
            younger = spec.get("keepYoungerThan", "60m")
            return cls(
                keep_tag_revisions=int(spec.get("keepTagRevisions", 3)),
                keep_younger_than=parse_duration(str(younger)),
                whitelist=_strings(spec.get("whitelist"), "whitelist"),
                all=bool(spec.get("all", False)),
                prune_registry=bool(spec.get("pruneRegistry", False)),
                registry_url=str(spec.get("registryURL", "") or ""),
                ignore_invalid_refs=bool(spec.get("ignoreInvalidRefs", False)),
                keep_referenced=_strings(spec.get("keepReferenced"), "keepReferenced"),
                catalog_page_size=int(spec.get("catalogPageSize", 0) or 0),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidOptions):
                raise
            raise InvalidOptions(f"invalid prune spec: {exc}") from None


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidOptions(f"{name} must be a list of strings")
    return tuple(value)
