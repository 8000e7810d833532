"""The "simple signing" payload: the JSON document an image signature actually signs.

Format per containers/image `docs/containers-signature.5.md` ("JSON data format"):
`{"critical": {"identity": {"docker-reference": REF}, "image": {"docker-manifest-digest":
DIGEST}, "type": TYPE}, "optional": {...}}`. Like containers/image we are strict about the
`critical` section (unknown keys are rejected, since a verifier that ignores a critical
claim it does not understand would be unsafe) and lenient about `optional`. Atomic/skopeo
signatures use type `atomic container signature`; cosign uses `cosign container image
signature` and writes `"optional": null` (sigstore cosign `specs/SIGNATURE_SPEC.md`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from imageregistry.httpinput import InvalidJSON, load_json
from imageregistry.signatures.errors import MalformedSignature

ATOMIC_TYPE = "atomic container signature"
COSIGN_TYPE = "cosign container image signature"

# Only the digest algorithms the registry itself produces (OCI image-spec descriptor.md
# "Registered algorithms"); anything else cannot equal an image digest anyway.
_DIGEST_RE = re.compile(r"^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


def is_valid_digest(value: str) -> bool:
    """Whether *value* is a canonical `sha256:`/`sha512:` lowercase-hex digest."""
    return bool(_DIGEST_RE.match(value))


@dataclass(frozen=True)
class SimpleSigningPayload:
    """A parsed, validated simple-signing document."""

    docker_reference: str
    manifest_digest: str
    signature_type: str = ATOMIC_TYPE
    optional: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    creator: str | None = None
    timestamp: int | None = None


def parse_payload(
    data: bytes, accepted_types: tuple[str, ...] = (ATOMIC_TYPE,)
) -> SimpleSigningPayload:
    """Parse and validate *data*; raise `MalformedSignature` naming the first problem."""
    doc = load_strict_json(data, "signed payload")
    top = _object(doc, "signed payload")
    _only_keys(top, {"critical", "optional"}, "signed payload")
    critical = _object(top.get("critical"), "critical")
    _only_keys(critical, {"identity", "image", "type"}, "critical")
    sig_type = _string(critical.get("type"), "critical.type")
    if sig_type not in accepted_types:
        wanted = " or ".join(repr(t) for t in accepted_types)
        raise MalformedSignature(f"critical.type is {sig_type!r}, expected {wanted}")
    image = _object(critical.get("image"), "critical.image")
    _only_keys(image, {"docker-manifest-digest"}, "critical.image")
    digest = _string(image.get("docker-manifest-digest"), "critical.image.docker-manifest-digest")
    if not is_valid_digest(digest):
        raise MalformedSignature(
            f"critical.image.docker-manifest-digest {digest!r} is not a valid digest"
        )
    identity = _object(critical.get("identity"), "critical.identity")
    _only_keys(identity, {"docker-reference"}, "critical.identity")
    reference = _string(identity.get("docker-reference"), "critical.identity.docker-reference")
    if not reference:
        raise MalformedSignature("critical.identity.docker-reference is empty")
    optional = _optional(top.get("optional"))
    return SimpleSigningPayload(
        docker_reference=reference,
        manifest_digest=digest,
        signature_type=sig_type,
        optional=MappingProxyType(dict(optional)),
        creator=_creator(optional),
        timestamp=_timestamp(optional),
    )


def load_strict_json(data: bytes, what: str) -> Any:
    """`httpinput.load_json` that also refuses duplicate object keys.

    Python keeps the *last* of duplicate keys while other parsers keep the first or refuse
    (containers/image's paranoid parser refuses), so a payload naming
    `docker-manifest-digest` twice could mean different images to different verifiers;
    RFC 8259 §4 leaves duplicates undefined, so refusing them is the only safe reading.
    """
    try:
        return load_json(data, object_pairs_hook=_unique_keys)
    except InvalidJSON as exc:  # malformed, nested too deeply, numbers out of bounds
        raise MalformedSignature(f"{what} is not valid JSON: {exc}") from exc
    except _DuplicateKey as exc:
        raise MalformedSignature(f"{what} has duplicate JSON key {exc.key[:100]!r}") from None


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def build_payload(
    reference: str,
    digest: str,
    *,
    signature_type: str = ATOMIC_TYPE,
    creator: str | None = None,
    timestamp: int | None = None,
    extra_optional: Mapping[str, Any] | None = None,
) -> bytes:
    """Serialize a simple-signing document as compact JSON.

    Key order and compact separators mirror Go's `encoding/json` output of the
    containers/image and cosign structs, so a cosign-type payload with no optional
    claims is byte-identical to what cosign signs (`"optional":null`).
    """
    optional: dict[str, Any] = dict(extra_optional or {})
    if creator is not None:
        optional["creator"] = creator
    if timestamp is not None:
        optional["timestamp"] = timestamp
    doc = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": signature_type,
        },
        "optional": optional or (None if signature_type == COSIGN_TYPE else {}),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _object(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        raise MalformedSignature(f"{where} is missing")
    if not isinstance(value, dict):
        raise MalformedSignature(f"{where} must be a JSON object, not {_kind(value)}")
    return value


def _string(value: object, where: str) -> str:
    if value is None:
        raise MalformedSignature(f"{where} is missing")
    if not isinstance(value, str):
        raise MalformedSignature(f"{where} must be a string, not {_kind(value)}")
    return value


def _only_keys(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise MalformedSignature(f"{where} has unexpected field(s): {', '.join(unknown)}")


def _optional(value: object) -> Mapping[str, Any]:
    if value is None:  # cosign writes "optional": null
        return {}
    return _object(value, "optional")


def _creator(optional: Mapping[str, Any]) -> str | None:
    value = optional.get("creator")
    if value is None:
        return None
    return _string(value, "optional.creator")


def _timestamp(optional: Mapping[str, Any]) -> int | None:
    value = optional.get("timestamp")
    if value is None:
        return None
    # bool is an int subclass in Python; JSON true is not a timestamp.
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedSignature(f"optional.timestamp must be an integer, not {_kind(value)}")
    return value


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
