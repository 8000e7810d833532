"""The one clock and RFC 3339 helper (`imageregistry.clock`): the exact bytes Kubernetes and
distribution clients read, and a strict parser that refuses what they never send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from imageregistry.clock import (
    Clock,
    parse_rfc3339,
    rfc3339,
    rfc3339_nanos,
    rfc3339_precise,
    system_clock,
)

MOMENT = datetime(2026, 12, 5, 2, 5, 9, 123456, tzinfo=UTC)


def test_rfc3339_is_utc_to_the_second_with_z() -> None:
    assert rfc3339(MOMENT) == "2026-12-05T02:05:09Z"
    assert rfc3339(MOMENT.replace(microsecond=999999)) == "2026-12-05T02:05:09Z"  # truncated


def test_rfc3339_writes_what_kubernetes_metav1_time_writes() -> None:
    """The bytes every site produced before the helper: strftime's, for UTC moments."""
    for moment in (MOMENT, datetime(1999, 1, 1, tzinfo=UTC), datetime(2038, 1, 19, 3, 14, 8)):
        expected = moment.replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert rfc3339(moment) == expected


def test_rfc3339_converts_other_zones_and_reads_naive_values_as_utc() -> None:
    east = MOMENT.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert rfc3339(east) == "2026-12-05T02:05:09Z"
    assert rfc3339(MOMENT.replace(tzinfo=None)) == "2026-12-05T02:05:09Z"  # SQLite's naive rows


def test_rfc3339_nanos_has_nine_digits_like_go() -> None:
    assert rfc3339_nanos(MOMENT) == "2026-12-05T02:05:09.123456000Z"
    assert rfc3339_nanos(MOMENT.replace(microsecond=0)) == "2026-12-05T02:05:09.000000000Z"
    assert rfc3339_nanos(MOMENT.replace(tzinfo=None)) == "2026-12-05T02:05:09.123456000Z"
    east = MOMENT.astimezone(timezone(timedelta(hours=-3)))
    assert rfc3339_nanos(east) == "2026-12-05T02:05:09.123456000Z"
    assert rfc3339_precise(east) == "2026-12-05T02:05:09.123456Z"


def test_rfc3339_precise_keeps_the_microseconds_a_value_has() -> None:
    """Prune and GC results have always carried Python's isoformat with a `Z`."""
    assert rfc3339_precise(MOMENT) == "2026-12-05T02:05:09.123456Z"
    assert rfc3339_precise(MOMENT.replace(microsecond=0)) == "2026-12-05T02:05:09Z"
    for moment in (MOMENT, MOMENT.replace(microsecond=0)):
        assert rfc3339_precise(moment) == moment.isoformat().replace("+00:00", "Z")
    assert rfc3339_precise(MOMENT.replace(tzinfo=None)) == "2026-12-05T02:05:09.123456Z"


def test_round_trip() -> None:
    seconds = MOMENT.replace(microsecond=0)
    assert parse_rfc3339(rfc3339(seconds)) == seconds
    assert parse_rfc3339(rfc3339_nanos(MOMENT)) == MOMENT
    assert parse_rfc3339(rfc3339_precise(MOMENT)) == MOMENT
    assert parse_rfc3339(rfc3339(MOMENT)).tzinfo is UTC


def test_parse_accepts_offsets_and_truncates_nanoseconds() -> None:
    assert parse_rfc3339("2026-12-05T07:35:09+05:30") == MOMENT.replace(microsecond=0)
    assert parse_rfc3339("2026-12-04T21:05:09-05:00") == MOMENT.replace(microsecond=0)
    assert parse_rfc3339("2026-12-05T02:05:09.123456789Z") == MOMENT
    assert parse_rfc3339("2026-12-05t02:05:09.5z") == MOMENT.replace(microsecond=500000)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "yesterday",
        "2026-12-05",  # a date alone
        "2026-12-05T02:05:09",  # no zone: ambiguous
        "2026-12-05 02:05:09Z",  # space instead of T
        "20261205T020509Z",  # ISO 8601 basic format
        "2026-W49-6T02:05:09Z",  # ISO week date
        "2026-13-05T02:05:09Z",  # month 13
        "2026-02-30T02:05:09Z",  # no such day
        "2026-12-05T24:00:00Z",
        "2026-12-05T02:05:60Z",  # leap seconds do not fit a datetime
        "2026-12-05T02:05:09+24:00",
        "2026-12-05T02:05:09.Z",  # a dot without digits
        "2026-12-05T02:05:09.1234567890Z",  # more than nanoseconds
        "2026-12-05T02:05:09Z ",  # trailing text
        "\u0662\u0660\u0662\u0666-12-05T02:05:09Z",  # non-ASCII digits
    ],
)
def test_parse_rejects_garbage(garbage: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(garbage)


def test_the_system_clock_is_aware_utc_and_a_function_is_a_clock() -> None:
    now = system_clock()
    assert now.tzinfo is UTC
    fixed: Clock = lambda: MOMENT  # noqa: E731 - what tests hand to components
    assert fixed() == MOMENT
