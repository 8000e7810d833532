"""The five-field cron matcher used by scheduled pruning."""

from __future__ import annotations

from datetime import datetime

import pytest

from imageregistry.prune.cron import CronSchedule, InvalidSchedule


@pytest.mark.parametrize(
    ("expr", "when", "expected"),
    [
        ("0 0 * * *", datetime(2025, 1, 1, 0, 0), True),
        ("0 0 * * *", datetime(2025, 1, 1, 0, 1), False),
        ("*/15 2-4 * * 1-5", datetime(2025, 6, 2, 3, 30), True),  # Monday
        ("*/15 2-4 * * 1-5", datetime(2025, 6, 1, 3, 30), False),  # Sunday
        ("30 1 1 * 0", datetime(2025, 6, 1, 1, 30), True),  # both day fields: either matches
        ("30 1 15 * 0", datetime(2025, 6, 8, 1, 30), True),  # a Sunday, not the 15th
        ("30 1 15 * 0", datetime(2025, 6, 9, 1, 30), False),
        ("0 12 * * 7", datetime(2025, 6, 1, 12, 0), True),  # 7 is Sunday too
        ("5,10 * * 2 *", datetime(2025, 2, 3, 9, 10), True),
    ],
)
def test_matches(expr: str, when: datetime, expected: bool) -> None:
    assert CronSchedule.parse(expr).matches(when) is expected


@pytest.mark.parametrize(
    "expr", ["", "* * * *", "60 * * * *", "* 24 * * *", "*/0 * * * *", "a * * * *"]
)
def test_invalid(expr: str) -> None:
    with pytest.raises(InvalidSchedule):
        CronSchedule.parse(expr)
