"""The one clock and the one way timestamps become text (RFC 3339) and back.

A component whose behaviour depends on the time (tokens, leases, pruning, GC, pulls) is
given a `Clock` by whoever builds it: the server passes `system_clock`, tests a function
returning a fixed moment, so a test can step time deliberately. The few places that only
stamp a row with the moment it was written (the change log, bootstrap objects, secrets)
call `system_clock` directly: one implementation either way.

Timestamps leave the server in the shapes Kubernetes and distribution use, always UTC
with a literal `Z`:

- `rfc3339`: seconds, `2006-01-02T15:04:05Z` — Kubernetes' `metav1.Time` (object
  metadata, conditions, status times).
- `rfc3339_precise`: microseconds when the value has any, none otherwise — the times
  in prune, GC and verification results (`prune/wire.py`), which have always been
  written so.
- `rfc3339_nanos`: nine fractional digits — Go's `time.Time` as distribution's event
  envelopes carry it (datetime holds microseconds, so the last three are zero).

`parse_rfc3339` reads the profile back strictly (date, `T`, time, optional fraction, `Z` or
a numeric offset) instead of `datetime.fromisoformat`, which also takes ISO 8601 forms no
Kubernetes client sends (week dates, basic format, a missing zone).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """What tells a component the time: an aware UTC `datetime` on each call."""

    def __call__(self) -> datetime: ...


def system_clock() -> datetime:
    """The real time, in UTC: the `Clock` the server hands out."""
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    """`moment` on the UTC wall clock. Naive values are UTC already (SQLite hands them back
    naive) and stay naive: the formatters below write the digits and their own `Z`, and
    attaching a zone costs more than the formatting (these run once per row of a listing)."""
    zone = moment.tzinfo
    return moment if zone is None or zone is UTC else moment.astimezone(UTC)


def rfc3339(moment: datetime) -> str:
    """`2006-01-02T15:04:05Z`: UTC to the second, the fraction dropped (not rounded)."""
    # isoformat is several times faster than strftime and pads the year to four digits.
    return _utc(moment).isoformat(timespec="seconds")[:19] + "Z"


def rfc3339_precise(moment: datetime) -> str:
    """`2006-01-02T15:04:05.123456Z`, or `2006-01-02T15:04:05Z` when the microseconds are 0."""
    utc = _utc(moment)
    text = utc.isoformat()
    return (text if utc.tzinfo is None else text[:-6]) + "Z"  # without the "+00:00"


def rfc3339_nanos(moment: datetime) -> str:
    """`2006-01-02T15:04:05.123456000Z`: UTC with nine fractional digits, always."""
    return _utc(moment).isoformat(timespec="microseconds")[:26] + "000Z"


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,  # `\d` is 0-9 only, not every Unicode digit
)


def parse_rfc3339(text: str) -> datetime:
    """An aware UTC `datetime` from RFC 3339 text; `ValueError` for anything else.

    Fractions beyond microseconds (Go writes nanoseconds) are truncated, as `datetime`
    cannot hold them."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:64]!r}")
    fraction, zone = match.group(1), match.group(2)
    offset = "+00:00" if zone in ("Z", "z") else zone
    # The pattern fixed the shape; fromisoformat checks the ranges (month 13, February
    # 30, second 60, an offset of 24 hours) and is the fastest way to build the value.
    iso = f"{text[:10]}T{text[11:19]}{'.' + fraction[:6].ljust(6, '0') if fraction else ''}"
    parsed = datetime.fromisoformat(iso + offset)
    return parsed if offset == "+00:00" else parsed.astimezone(UTC)
