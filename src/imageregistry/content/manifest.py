"""Parsing and validating manifests, and summarising image configs.

Accepts the Docker image manifest v2 schema 2 and manifest list, and the OCI image
manifest and index (image-spec v1.1, with `artifactType` and `subject`). Unknown fields and
`null`s are tolerated (the bytes are stored exactly as pushed), but every descriptor the
registry relies on must be well formed. Docker schema1 is refused with a message telling
the user to convert. `summarize_config` turns an image config into the
`dockerImageMetadata`-like summary recorded on the Image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imageregistry.content import mediatypes as mt
from imageregistry.content.digest import Digest, InvalidDigest
from imageregistry.httpinput import InvalidJSON, load_json

# Sizes are stored as signed 64-bit integers (SQLite INTEGER, PostgreSQL bigint); the
# image spec (descriptor.md) likewise bounds `size` to int64.
MAX_SIZE = (1 << 63) - 1


class InvalidManifest(ValueError):
    """The manifest cannot be accepted; the message says why."""


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    os: str | None = None
    architecture: str | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    media_type: str
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    children: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None
    annotations: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES


def _media_type(doc: dict[str, Any], content_type: str) -> str:
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise InvalidManifest("mediaType must be a string")
    version = doc.get("schemaVersion")
    version = None if isinstance(version, bool) else version  # JSON true is not 1
    if version == 1 or declared in mt.SCHEMA1 or content_type in mt.SCHEMA1:
        raise InvalidManifest(
            "Docker schema1 manifests are not supported; push the image as a Docker schema2 "
            "or OCI manifest (e.g. skopeo copy --format v2s2 or --format oci)"
        )
    if version != 2:
        raise InvalidManifest("schemaVersion must be 2")
    generic = content_type in ("", "application/json", "application/octet-stream")
    if declared and not generic and content_type != declared:
        raise InvalidManifest(
            f"Content-Type {content_type!r} does not match the manifest mediaType {declared!r}"
        )
    media_type = declared or ("" if generic else content_type)
    if not media_type:
        # OCI manifests may omit mediaType (image-spec manifest.md); infer from the shape.
        media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    if media_type not in mt.MANIFESTS:
        raise InvalidManifest(f"unsupported manifest media type {media_type!r}")
    return media_type


def _descriptor(value: Any, where: str, *, platform: bool = False) -> Descriptor:
    if not isinstance(value, dict):
        raise InvalidManifest(f"{where} must be a descriptor object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise InvalidManifest(f"{where}.mediaType must be a non-empty string")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        raise InvalidManifest(f"{where}.size must be a non-negative 64-bit integer")
    try:
        digest = Digest.parse(value.get("digest"))  # type: ignore[arg-type]
    except InvalidDigest as exc:
        raise InvalidManifest(f"{where}.digest: {exc}") from None
    artifact_type = value.get("artifactType")
    plat = value.get("platform") if platform else None
    plat = plat if isinstance(plat, dict) else {}
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        os=_opt_str(plat.get("os")),
        architecture=_opt_str(plat.get("architecture")),
        variant=_opt_str(plat.get("variant")),
    )


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _descriptor_list(value: Any, where: str, *, platform: bool = False) -> tuple[Descriptor, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidManifest(f"{where} must be a list of descriptors")
    return tuple(_descriptor(v, f"{where}[{i}]", platform=platform) for i, v in enumerate(value))


def _annotations(value: Any) -> dict[str, str]:
    """Annotations are a string-to-string map (image-spec annotations.md). Anything else is
    refused: the referrers API repeats them, and Go clients decoding that index into
    `map[string]string` would fail on every listing of the subject."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidManifest("annotations must be a map of strings to strings")
    return dict(value)


def parse_manifest(body: bytes, content_type: str | None) -> ParsedManifest:
    """Parse `body` as pushed with `content_type`; raise `InvalidManifest` saying why not."""
    try:
        doc = load_json(body)  # bounded: hostile nesting, integers beyond 64 bits, NaN
    except InvalidJSON as exc:
        raise InvalidManifest(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidManifest("manifest must be a JSON object")
    media_type = _media_type(doc, mt.base_media_type(content_type))
    subject = None if doc.get("subject") is None else _descriptor(doc["subject"], "subject")
    artifact_type = _opt_str(doc.get("artifactType"))
    clean = _annotations(doc.get("annotations"))
    if media_type in mt.INDEXES:
        if not isinstance(doc.get("manifests"), list):
            raise InvalidManifest("an index must have a manifests list")
        children = _descriptor_list(doc["manifests"], "manifests", platform=True)
        return ParsedManifest(media_type, None, (), children, subject, artifact_type, clean)
    config = _descriptor(doc.get("config"), "config")
    layers = _descriptor_list(doc.get("layers"), "layers")
    if media_type == mt.DOCKER_MANIFEST and not layers and "layers" not in doc:
        raise InvalidManifest("a Docker schema2 manifest must have a layers list")
    return ParsedManifest(media_type, config, layers, (), subject, artifact_type, clean)


def referrer_artifact_type(parsed: ParsedManifest) -> str | None:
    """The artifactType the referrers API reports (image-spec manifest.md, artifactType)."""
    if parsed.artifact_type:
        return parsed.artifact_type
    return parsed.config.media_type if parsed.config is not None else None


@dataclass(frozen=True, slots=True)
class ImageSummary:
    created: datetime | None
    metadata: dict[str, Any] = field(hash=False)


_CONFIG_KEYS = (
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Labels",
    "Volumes",
)


def parse_timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    # RFC 3339 allows nanoseconds; datetime accepts at most microseconds.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:digits][:6]}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def summarize_config(config: bytes) -> ImageSummary:
    """Summary of an image config; an unparsable config yields an empty summary."""
    try:
        doc = json.loads(config)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ImageSummary(None, {})
    if not isinstance(doc, dict):
        return ImageSummary(None, {})
    created = parse_timestamp(doc.get("created"))
    summary: dict[str, Any] = {}
    for key in ("created", "architecture", "os", "variant", "author"):
        if isinstance(doc.get(key), str) and doc[key]:
            summary[key] = doc[key]
    runtime = doc.get("config")
    if isinstance(runtime, dict):
        picked = {k: runtime[k] for k in _CONFIG_KEYS if runtime.get(k) not in (None, "", [], {})}
        if picked:
            summary["config"] = picked
    return ImageSummary(created, summary)
