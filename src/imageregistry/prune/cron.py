"""A five-field cron matcher (minute hour day-of-month month day-of-week) for ImagePruner.

Written here rather than taking a dependency because the scheduler needs only "does this
minute match" and validation, about sixty lines. Fields accept `*`, numbers, ranges
`a-b`, lists `a,b` and steps `*/n` / `a-b/n`; day-of-week 0 and 7 are Sunday. As in
Vixie cron (crontab(5)), when both day fields are restricted a day matches if either does.
Month and weekday names are not supported and are reported as invalid.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from imageregistry.httpinput import InputError, parse_int

_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = ("minute", "hour", "day of month", "month", "day of week")


class InvalidSchedule(ValueError):
    pass


def _int(text: str, name: str) -> int:
    """A number of a field (the schedule comes from an API request: httpinput's bounds)."""
    try:
        return parse_int(text, f"number in the {name} field")
    except InputError as exc:
        raise InvalidSchedule(str(exc)) from None


def _field(text: str, low: int, high: int, name: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = _int(step_text, name) if step_text.isdigit() else 0
        if step_text and not step:
            raise InvalidSchedule(f"invalid step in {name} field: {part!r}")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            if not (a.isdigit() and b.isdigit()):
                raise InvalidSchedule(f"invalid range in {name} field: {part!r}")
            start, end = _int(a, name), _int(b, name)
        elif base.isdigit():
            start = end = _int(base, name)
            if step:
                end = high
        else:
            raise InvalidSchedule(f"invalid {name} field: {part!r}")
        if not (low <= start <= end <= high):
            raise InvalidSchedule(f"{name} field out of range {low}-{high}: {part!r}")
        values.update(range(start, end + 1, step or 1))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_restricted: bool
    weekday_restricted: bool

    @classmethod
    def parse(cls, text: str) -> CronSchedule:
        fields = text.split()
        if len(fields) != 5:
            raise InvalidSchedule(f"expected 5 fields (minute hour day month weekday): {text!r}")
        parsed = [
            _field(f, lo, hi, n) for f, (lo, hi), n in zip(fields, _BOUNDS, _NAMES, strict=True)
        ]
        weekdays = frozenset(0 if d == 7 else d for d in parsed[4])
        return cls(
            parsed[0], parsed[1], parsed[2], parsed[3], weekdays, fields[2] != "*", fields[4] != "*"
        )

    def matches(self, when: datetime) -> bool:
        if when.minute not in self.minutes or when.hour not in self.hours:
            return False
        if when.month not in self.months:
            return False
        day_ok = when.day in self.days
        weekday_ok = (when.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok
