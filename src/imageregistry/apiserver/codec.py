"""Request bodies: JSON or Kubernetes protobuf in, field validation.

kubectl sends protobuf for built-in kinds and JSON for everything else
(docs/kubectl.md#cross-cutting-facts); both decode to the same JSON-shaped dict here, and nothing
past this module sees raw bytes. `fieldValidation` (Strict, Warn, Ignore; Strict when kubectl has
OpenAPI) decides what happens to fields a kind does not declare and to duplicate JSON keys: a 400
with kube's `strict decoding error: unknown field "spec.x"` wording, a `Warning: 299` header, or
silently dropping them. Kinds declare their fields with a tiny schema notation: a dict of field name
to sub-schema, a one-element list for arrays, and `ANY` where anything goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imageregistry.apiserver.protobuf import ProtobufDecodeError, decode_k8s_protobuf
from imageregistry.apiserver.status import bad_request, unsupported_media_type
from imageregistry.httpinput import InvalidJSON, load_json

# kube-apiserver's default request size limit; api_endpoints.py reads no more (httpinput.read_body)
MAX_BODY_BYTES = 3 * 1024 * 1024
MAX_DEPTH = 100  # far beyond any real object; well inside Python's recursion limit
PROTOBUF = "application/vnd.kubernetes.protobuf"
JSON_TYPES = (
    "application/json",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "",
)

ANY: Any = "any"
Schema = Any  # dict[str, Schema] | list[Schema] | ANY

OBJECT_META: Schema = {
    "name": ANY,
    "generateName": ANY,
    "namespace": ANY,
    "selfLink": ANY,
    "uid": ANY,
    "resourceVersion": ANY,
    "generation": ANY,
    "creationTimestamp": ANY,
    "deletionTimestamp": ANY,
    "deletionGracePeriodSeconds": ANY,
    "labels": ANY,
    "annotations": ANY,
    "ownerReferences": ANY,
    "finalizers": ANY,
    "managedFields": ANY,
}


def object_schema(**fields: Schema) -> Schema:
    """A top-level kind: apiVersion, kind, metadata plus its own fields."""
    return {"apiVersion": ANY, "kind": ANY, "metadata": OBJECT_META, **fields}


@dataclass(frozen=True)
class Decoded:
    body: Any
    duplicates: tuple[str, ...] = ()


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def decode_body(raw: bytes, content_type: str) -> Decoded:
    """Parse a request body (already bounded by `read_body`); 400 when malformed, 415 for
    unknown types."""
    kind = media_type(content_type)
    if kind == PROTOBUF:
        try:
            decoded = Decoded(decode_k8s_protobuf(raw))
        except ProtobufDecodeError as exc:
            raise bad_request(f"the body of the request could not be decoded: {exc}") from None
    elif kind not in JSON_TYPES and not kind.endswith("+json"):
        raise unsupported_media_type(content_type)
    else:
        decoded = decode_json(raw)
    _check_shape(decoded.body)
    return decoded


def _check_shape(body: Any) -> None:
    """400 for nesting deeper than MAX_DEPTH (everything past here walks bodies recursively)
    or for U+0000 in any string (PostgreSQL text and jsonb cannot hold it). Iterative, so
    the check itself cannot overflow the stack."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise bad_request("the body of the request may not contain the character U+0000")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise bad_request(f"the body of the request is nested deeper than {MAX_DEPTH} levels")
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        stack.extend((item, depth + 1) for item in items)


def decode_json(raw: bytes) -> Decoded:
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                duplicates.append(key)
            out[key] = value
        return out

    try:
        body = load_json(raw.decode("utf-8"), object_pairs_hook=pairs)
    except (UnicodeDecodeError, InvalidJSON) as exc:
        # InvalidJSON also covers integers beyond 64 bits, 1e999 and NaN (httpinput)
        raise bad_request(f"the body of the request could not be decoded as JSON: {exc}") from None
    return Decoded(body, tuple(duplicates))


def unknown_fields(obj: Any, schema: Schema, path: str = "") -> list[str]:
    """Dotted paths (`spec.bogusField`) of fields `schema` does not declare."""
    if schema is ANY or obj is None:
        return []
    found: list[str] = []
    if isinstance(schema, dict) and isinstance(obj, Mapping):
        for key, value in obj.items():
            here = f"{path}.{key}" if path else str(key)
            if key not in schema:
                found.append(here)
            else:
                found.extend(unknown_fields(value, schema[key], here))
    elif isinstance(schema, list) and isinstance(obj, list):
        for index, item in enumerate(obj):
            found.extend(unknown_fields(item, schema[0], f"{path}[{index}]"))
    return found


def drop_unknown(obj: Any, schema: Schema) -> Any:
    if schema is ANY or obj is None:
        return obj
    if isinstance(schema, dict) and isinstance(obj, Mapping):
        return {k: drop_unknown(v, schema[k]) for k, v in obj.items() if k in schema}
    if isinstance(schema, list) and isinstance(obj, list):
        return [drop_unknown(item, schema[0]) for item in obj]
    return obj


def apply_field_validation(decoded: Decoded, schema: Schema, mode: str) -> tuple[Any, list[str]]:
    """Return (body, warnings) per the `fieldValidation` mode (default Strict, as kubectl)."""
    mode = mode or "Strict"
    if mode not in ("Strict", "Warn", "Ignore"):
        raise bad_request(f'fieldValidation must be one of Strict, Warn, Ignore, got "{mode}"')
    problems = [f'unknown field "{p}"' for p in unknown_fields(decoded.body, schema)]
    problems += [f'duplicate field "{d}"' for d in decoded.duplicates]
    if mode == "Strict" and problems:
        raise bad_request("strict decoding error: " + ", ".join(problems))
    body = drop_unknown(decoded.body, schema)
    return body, problems if mode == "Warn" else []


def warning_header(messages: list[str]) -> str:
    """RFC 7234 warn-code 299 with backslash-escaped quotes (kubectl drops it otherwise)."""
    parts = []
    for message in messages:
        text = message.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'299 - "{text}"')
    return ", ".join(parts)
