"""Pure pieces of the API machinery: body decoding, field validation, patches, selectors, Age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imageregistry.apiserver.codec import (
    ANY,
    apply_field_validation,
    decode_body,
    decode_json,
    object_schema,
    warning_header,
)
from imageregistry.apiserver.patch import json_patch, merge_patch, strategic_merge_patch
from imageregistry.apiserver.selectors import field_predicate, label_predicate
from imageregistry.apiserver.status import ApiError
from imageregistry.apiserver.tables import Column, human_duration, render_table, wants_table

SCHEMA = object_schema(spec={"tags": [{"name": ANY}]})


def test_strict_rejects_unknown_and_duplicate_fields() -> None:
    decoded = decode_json(b'{"kind":"X","spec":{"tags":[{"name":"a","bogus":1}]},"kind":"X"}')
    with pytest.raises(ApiError) as err:
        apply_field_validation(decoded, SCHEMA, "Strict")
    assert err.value.code == 400
    assert 'unknown field "spec.tags[0].bogus"' in err.value.message
    assert 'duplicate field "kind"' in err.value.message


def test_warn_keeps_going_and_ignore_drops() -> None:
    decoded = decode_json(b'{"spec":{"x":1}}')
    body, warnings = apply_field_validation(decoded, SCHEMA, "Warn")
    assert warnings == ['unknown field "spec.x"'] and body == {"spec": {}}
    assert apply_field_validation(decoded, SCHEMA, "Ignore") == ({"spec": {}}, [])
    assert warning_header(warnings) == '299 - "unknown field \\"spec.x\\""'


def test_body_media_types() -> None:
    with pytest.raises(ApiError) as proto:
        decode_body(b"k8s\x00\xff", "application/vnd.kubernetes.protobuf")
    assert proto.value.code == 400
    with pytest.raises(ApiError) as kind:
        decode_body(b"x", "text/html")
    assert kind.value.code == 415


def test_merge_patch_rfc7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "l": [3]}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "l": [3]}


def test_strategic_merge_drops_directives() -> None:
    target = {"metadata": {"labels": {"a": "1"}}, "subjects": [{"name": "x"}]}
    patch = {
        "metadata": {"labels": {"b": "2"}},
        "$setElementOrder/subjects": [{"name": "y"}],
        "subjects": [{"name": "y"}],
    }
    assert strategic_merge_patch(target, patch) == {
        "metadata": {"labels": {"a": "1", "b": "2"}},
        "subjects": [{"name": "y"}],
    }


def test_json_patch_rfc6902() -> None:
    doc = {"metadata": {"labels": {"a/b": "1"}}, "items": [1, 2]}
    ops = [
        {"op": "add", "path": "/items/-", "value": 3},
        {"op": "remove", "path": "/metadata/labels/a~1b"},
        {"op": "copy", "from": "/items/0", "path": "/first"},
        {"op": "test", "path": "/first", "value": 1},
    ]
    assert json_patch(doc, ops) == {"metadata": {"labels": {}}, "items": [1, 2, 3], "first": 1}
    with pytest.raises(ApiError):
        json_patch(doc, [{"op": "replace", "path": "/missing", "value": 1}])
    with pytest.raises(ApiError):
        json_patch(doc, [{"op": "test", "path": "/items/0", "value": 9}])


def test_selectors() -> None:
    obj = {"metadata": {"name": "n", "namespace": "ns", "labels": {"tier": "web", "env": "prod"}}}
    assert label_predicate("tier=web,env in (prod,dev),!missing")(obj)
    assert not label_predicate("tier!=web")(obj)
    assert label_predicate("env notin (dev)")(obj)
    assert field_predicate("metadata.name=n,metadata.namespace!=other")(obj)
    with pytest.raises(ApiError):
        field_predicate("spec.x=1")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (150, "2m30s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 3600, "3d1h"),
        (400 * 86400, "400d"),
        (3 * 365 * 86400, "3y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_table_rendering() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    created = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    obj = {"metadata": {"name": "x", "creationTimestamp": created}}
    table = render_table(
        [Column("Name"), Column("Age")],
        lambda o, n: [o["metadata"]["name"], "5m"],
        [obj],
        now,
        resource_version="7",
    )
    assert table["apiVersion"] == "meta.k8s.io/v1" and table["rows"][0]["cells"] == ["x", "5m"]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    assert not wants_table("application/json")
