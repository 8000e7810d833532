"""Formatting shared by every `ac` command: sizes, ages, cells and aligned columns.

docs/behaviour.md#ac-adm-top: sizes are binary units with four significant digits (`12.34MiB`),
lists are joined with `, `, empty cells print `<none>`, booleans `yes`/`no`. Columns are padded like
kubectl's tabwriter (three spaces between columns, no trailing spaces).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

NONE = "<none>"
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_size(size: int) -> str:
    """Binary units, four significant digits: 999B, 1.5KiB, 12.34MiB, 123.4GiB."""
    value = float(size)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{size}B"
    text = f"{value:.4g}"
    if "e" in text:  # 1023.99 rounds to 1024 -> "1024"; never scientific notation
        text = f"{value:.0f}"
    return f"{text}{_UNITS[unit]}"


def cell(value: str | None) -> str:
    return value if value else NONE


def join(values: Iterable[str]) -> str:
    return cell(", ".join(values))


def duration(seconds: float) -> str:
    """kubectl-style short durations: 45s, 5m, 3h, 2d (with the next unit below 3 of a kind)."""
    total = max(int(seconds), 0)
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 730:
        return f"{days}d"
    return f"{days // 365}y"


def ago(when: datetime, now: datetime) -> str:
    return f"{duration((now - when).total_seconds())} ago"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns, three spaces apart, the last column unpadded."""
    grid = [list(headers), *(list(r) for r in rows)]
    widths = [max(map(len, column)) for column in zip(*grid, strict=True)]
    # One format string for every line: the per-cell Python work is what dominates when a
    # report has 100,000 rows.
    line = "   ".join(f"{{:<{w}}}" for w in widths[:-1]) + ("   {}" if widths[:-1] else "{}")
    return "\n".join(line.format(*r).rstrip() for r in grid)
