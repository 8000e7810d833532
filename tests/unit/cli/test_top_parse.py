"""`ac adm top` client side: the streamed usage List in array and object layouts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from imageregistry.cli.ac.references import ReferenceIndex
from imageregistry.cli.ac.top import (
    IMAGE_COLUMNS,
    UsageCells,
    image_arrays,
    image_object,
    image_row,
    parse_usage_list,
)

ARRAY = [
    "sha256:aa",
    [["team-a", "app", ["latest", "v1.0"]]],
    ["sha256:bb"],
    "2026-01-01T00:00:00Z",
    True,
    1536,
    3,
]


def _lines(items: list[str], head: dict[str, object]) -> list[bytes]:
    body = (
        json.dumps(head)[:-1]
        + ',"items":[\n'
        + "\n".join((item if i == 0 else "," + item) for i, item in enumerate(items))
    )
    return [chunk.encode() for chunk in (body[:37], body[37:90], body[90:] + "\n]}\n")]


def test_array_items_split_across_chunks_become_rows() -> None:
    head = {"kind": "ImageUsageList", "total": 2, "columns": list(IMAGE_COLUMNS)}
    second: list[object] = ["sha256:cc", [], [], None, False, 10, 1]
    report = parse_usage_list(_lines([json.dumps(ARRAY), json.dumps(second)], head))
    items = image_arrays(report)
    usage = UsageCells(ReferenceIndex.build([], ["r.test"]), datetime(2026, 1, 3, tzinfo=UTC))
    assert image_row(items[0], usage) == [
        "sha256:aa",
        "team-a/app (latest,v1.0)",
        "sha256:bb",
        "pulled 2d ago",
        "yes",
        "1.5KiB",
    ]
    assert image_row(items[1], usage) == ["sha256:cc", "<none>", "<none>", "<none>", "no", "10B"]
    assert image_object(items[0], [])["imageStreamTags"] == [
        {"namespace": "team-a", "name": "app", "tags": ["latest", "v1.0"]}
    ]


def test_object_items_and_a_whole_body_read_the_same() -> None:
    obj = image_object(ARRAY, [])
    del obj["usage"]
    streamed = parse_usage_list(_lines([json.dumps(obj)], {"kind": "ImageUsageList"}))
    whole = parse_usage_list([json.dumps({"kind": "ImageUsageList", "items": [obj]}).encode()])
    assert image_arrays(streamed) == image_arrays(whole) == [ARRAY]
