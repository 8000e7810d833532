"""Go-style durations, option specs and workload reference parsing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from imageregistry.prune.inuse import InvalidReferences, gather_in_use, parse_reference
from imageregistry.prune.options import (
    InvalidOptions,
    PruneOptions,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("72h", timedelta(hours=72)),
        ("90m", timedelta(minutes=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        ("300ms", timedelta(milliseconds=300)),
        ("0", timedelta(0)),
        ("2h45m30s", timedelta(hours=2, minutes=45, seconds=30)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "3d", "h", "72", "-1h", "1h 30m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidOptions):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    assert format_duration(timedelta(hours=72)) == "72h0m0s"
    assert parse_duration(format_duration(timedelta(minutes=90))) == timedelta(minutes=90)
    assert format_duration(timedelta(0)) == "0s"


def test_spec_round_trip_and_defaults() -> None:
    options = PruneOptions(
        keep_tag_revisions=5,
        keep_younger_than=timedelta(hours=72),
        whitelist=("^cpaas-system/.*",),
        keep_referenced=("a/b:c",),
    )
    assert PruneOptions.from_spec(options.to_spec()) == options
    assert PruneOptions.from_spec({}) == PruneOptions()


def test_invalid_whitelist_regex_is_an_error() -> None:
    with pytest.raises(InvalidOptions, match="whitelist"):
        PruneOptions.from_spec({"whitelist": ["("]})


def test_parse_reference_forms() -> None:
    ref = parse_reference("reg.example.com:5000/team-a/demo:v1")
    assert (ref.host, ref.path, ref.tag, ref.digest) == (
        "reg.example.com:5000",
        "team-a/demo",
        "v1",
        "",
    )
    digest = "sha256:" + "a" * 64
    ref = parse_reference(f"team-a/demo@{digest}")
    assert (ref.host, ref.tag, ref.digest) == ("", "", digest)
    assert parse_reference("team-a/demo").tag == "latest"


def test_invalid_references_fail_unless_ignored() -> None:
    with pytest.raises(InvalidReferences) as info:
        gather_in_use(["UPPER/Case:x", "ok/fine:1"], [], False)
    assert info.value.refs == ("UPPER/Case:x",)
    in_use = gather_in_use(["UPPER/Case:x", "ok/fine:1"], [], True)
    assert in_use.tag_in_use("ok", "fine", "1")


def test_invalid_references_message_names_only_a_few_cut_short() -> None:
    secret = "token: " + "s" * 200
    refs = [secret, "UPPER/A", "UPPER/B", "UPPER/C", "UPPER/D"]
    with pytest.raises(InvalidReferences) as info:
        gather_in_use(refs, [], False)
    message = str(info.value)
    assert message.startswith("5 invalid image reference(s): ")
    assert "s" * 41 not in message
    assert "UPPER/C" not in message and message.endswith(" and 2 more")
    assert info.value.refs == tuple(refs)
