"""Formatting helpers of `ac` (docs/behaviour.md#ac-adm-top formats)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from imageregistry.cli.ac.output import ago, human_size, join, table
from imageregistry.cli.ac.printers import jsonpath, render_table, to_yaml


def test_sizes_are_binary_with_four_significant_digits() -> None:
    assert human_size(999) == "999B"
    assert human_size(1536) == "1.5KiB"
    assert human_size(int(12.34 * 1024 * 1024)) == "12.34MiB"
    assert human_size(123 * 1024**3 + 400 * 1024**2) == "123.4GiB"


def test_cells() -> None:
    assert join([]) == "<none>"
    assert join(["a", "b"]) == "a, b"
    now = datetime(2026, 1, 2, tzinfo=UTC)
    assert ago(now - timedelta(hours=3), now) == "3h ago"


def test_table_aligns_columns_three_spaces_apart() -> None:
    assert table(["NAME", "SIZE"], [["a", "1B"], ["long-name", "2B"]]).splitlines() == [
        "NAME        SIZE",
        "a           1B",
        "long-name   2B",
    ]


def test_server_table_hides_wide_columns_unless_asked() -> None:
    doc = {
        "columnDefinitions": [
            {"name": "Name", "priority": 0},
            {"name": "Image Name", "priority": 1},
        ],
        "rows": [
            {"cells": ["demo:latest", "sha256:x"], "object": {"metadata": {"namespace": "t"}}}
        ],
    }
    assert render_table(doc, wide=False, namespace_column=False) == "NAME\ndemo:latest"
    assert render_table(doc, wide=True, namespace_column=True).splitlines()[1] == (
        "t           demo:latest   sha256:x"
    )


def test_yaml_and_jsonpath_like_kubectl() -> None:
    obj = {"metadata": {"name": "x", "created": "2026-01-01T00:00:00Z", "empty": ""}, "items": [1]}
    assert to_yaml(obj) == (
        'items:\n- 1\nmetadata:\n  created: "2026-01-01T00:00:00Z"\n  empty: ""\n  name: x\n'
    )
    assert jsonpath({"items": [{"n": "a"}, {"n": "b"}]}, "{.items[*].n}") == "a b"
    assert jsonpath({"a": {"b": 1}}, "v={.a.b}") == "v=1"
