"""Manifest parsing/validation and the image-config summary recorded on push."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from imageregistry.content import mediatypes as mt
from imageregistry.content.digest import Digest, digest_of
from imageregistry.content.manifest import (
    InvalidManifest,
    parse_manifest,
    referrer_artifact_type,
    summarize_config,
)
from imageregistry.content.push import describe_image

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def desc(digest: str, size: int = 10, media_type: str = "application/x") -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def oci(**extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": desc(D1, 5, mt.OCI_CONFIG),
        "layers": [desc(D2, 100), desc(D3, 50)],
        **extra,
    }


def body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def test_oci_manifest_with_subject_and_artifact_type() -> None:
    parsed = parse_manifest(
        body(oci(subject=desc(D3, 7, mt.OCI_MANIFEST), artifactType="application/sbom")),
        mt.OCI_MANIFEST,
    )
    assert parsed.media_type == mt.OCI_MANIFEST
    assert parsed.config is not None and str(parsed.config.digest) == D1
    assert [str(d.digest) for d in parsed.layers] == [D2, D3]
    assert parsed.subject is not None and str(parsed.subject.digest) == D3
    assert referrer_artifact_type(parsed) == "application/sbom"


def test_artifact_type_defaults_to_config_media_type() -> None:
    parsed = parse_manifest(body(oci()), None)
    assert referrer_artifact_type(parsed) == mt.OCI_CONFIG


def test_unknown_fields_and_nulls_are_accepted() -> None:
    parsed = parse_manifest(body(oci(annotations=None, extra={"x": None})), mt.OCI_MANIFEST)
    assert parsed.annotations == {}


def test_index_children_keep_platforms() -> None:
    child = {
        **desc(D2, 300, mt.OCI_MANIFEST),
        "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
    }
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [child]}
    parsed = parse_manifest(body(doc), mt.OCI_INDEX)
    assert parsed.is_index
    assert (parsed.children[0].os, parsed.children[0].architecture) == ("linux", "arm64")
    assert parsed.children[0].variant == "v8"


def test_media_type_is_inferred_when_absent_and_generic_content_type() -> None:
    doc = oci()
    del doc["mediaType"]
    assert parse_manifest(body(doc), "application/json").media_type == mt.OCI_MANIFEST
    doc = {"schemaVersion": 2, "manifests": []}
    assert parse_manifest(body(doc), None).media_type == mt.OCI_INDEX


@pytest.mark.parametrize(
    ("raw", "content_type", "message"),
    [
        (b"{not json", mt.OCI_MANIFEST, "not valid JSON"),
        (b"[]", mt.OCI_MANIFEST, "JSON object"),
        (body({"schemaVersion": 1, "name": "x"}), mt.DOCKER_SCHEMA1_SIGNED, "schema1"),
        (body({"schemaVersion": 1}), "application/json", "schema1"),
        (body(oci(schemaVersion=3)), mt.OCI_MANIFEST, "schemaVersion"),
        (body(oci()), mt.DOCKER_MANIFEST, "does not match"),
        (body(oci(mediaType="application/vnd.unknown+json")), None, "unsupported"),
        (body(oci(config={"mediaType": "x", "digest": "sha256:zz", "size": 1})), None, "digest"),
        (body(oci(config={"mediaType": "x", "digest": D1, "size": -1})), None, "size"),
        (body(oci(layers="nope")), None, "list"),
        (body({"schemaVersion": 2, "mediaType": mt.OCI_INDEX}), None, "manifests"),
    ],
)
def test_invalid_manifests_are_refused_with_a_reason(
    raw: bytes, content_type: str | None, message: str
) -> None:
    with pytest.raises(InvalidManifest, match=message):
        parse_manifest(raw, content_type)


def test_config_summary() -> None:
    config = {
        "created": "2024-05-01T10:00:00.123456789Z",
        "architecture": "arm64",
        "os": "linux",
        "variant": "v8",
        "author": "me",
        "config": {"Env": ["A=1"], "Cmd": None, "Entrypoint": ["/bin/x"], "Labels": {"a": "b"}},
    }
    summary = summarize_config(body(config))
    assert summary.created == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert summary.metadata["architecture"] == "arm64"
    assert summary.metadata["config"] == {
        "Env": ["A=1"],
        "Entrypoint": ["/bin/x"],
        "Labels": {"a": "b"},
    }
    assert summarize_config(b"garbage").metadata == {}


def test_describe_image_computes_sizes_and_top_layer() -> None:
    empty = next(iter(sorted(mt.EMPTY_LAYERS)))
    doc = oci(layers=[desc(D2, 100), desc(D2, 100), desc(empty, 32)])
    raw = body(doc)
    parsed = parse_manifest(raw, None)
    summary = summarize_config(b'{"created": "2020-01-01T00:00:00Z"}')
    now = datetime(2025, 1, 1, tzinfo=UTC)
    new = describe_image(digest_of(raw), parsed, raw, summary, now)
    assert new.storage_size == 100 + 32 + 5  # unique layers + config
    assert new.layer_count == 3
    assert new.top_layer == D2  # the empty layer is skipped
    assert new.created == datetime(2020, 1, 1, tzinfo=UTC)
    assert new.config_digest == D1
    assert [b.position for b in new.blobs] == [-1, 0, 1, 2]
    assert Digest.parse(new.digest) == digest_of(raw)
