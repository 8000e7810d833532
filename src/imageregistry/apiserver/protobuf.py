"""Decode Kubernetes protobuf request bodies into the dicts the JSON body would have produced.

kubectl sends `application/vnd.kubernetes.protobuf` for built-in kinds and never falls back to
JSON, so the server must read `k8s\\0` + `runtime.Unknown{typeMeta, raw, contentEncoding,
contentType}` (docs/kubectl.md#protobuf). Parsing is done by the `protobuf` library from descriptors
built at runtime out of the declarative table in `protobuf_schema`; a small walker then maps each
message onto Kubernetes JSON field names, drops empty values the way Go's `omitempty` does (so an
absent field and an explicitly empty one look the same), renders `Time` as RFC 3339 and
`ExtraValue` as a list. The library keeps a field seen with the wrong wire type as an unknown
field, so the walker turns such a field into an error, as Go's generated unmarshallers do.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, unknown_fields
from google.protobuf.message import DecodeError, Message

from imageregistry.apiserver.protobuf_schema import (
    ENVELOPE,
    KINDS,
    LIST_WRAPPERS,
    MESSAGES,
    QUANTITY,
    TIME,
    FieldSpec,
)
from imageregistry.clock import rfc3339

MAGIC = b"k8s\x00"
_PACKAGE = "imageregistry.k8s"
_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _FDP.TYPE_STRING,
    "bytes": _FDP.TYPE_BYTES,
    "bool": _FDP.TYPE_BOOL,
    "int32": _FDP.TYPE_INT32,
    "int64": _FDP.TYPE_INT64,
}
# Go's zero time.Time as Unix seconds; metav1.Time renders it as null, i.e. absent.
_GO_ZERO_TIME_SECONDS = -62135596800


class ProtobufDecodeError(ValueError):
    """The body is not a decodable Kubernetes protobuf object of a supported kind."""


@dataclass(frozen=True)
class _TypeRef:
    """A parsed type notation from the schema table: `T`, `[T]` or `{T}`."""

    name: str
    repeated: bool = False
    is_map: bool = False

    @classmethod
    def parse(cls, notation: str) -> _TypeRef:
        if notation.startswith("["):
            return cls(notation[1:-1], repeated=True)
        if notation.startswith("{"):
            return cls(notation[1:-1], is_map=True)
        return cls(notation)


def decode_k8s_protobuf(body: bytes) -> dict[str, object]:
    """Decode 'k8s\\0' + runtime.Unknown; return the object as a JSON-shaped dict including
    'apiVersion' and 'kind' from the envelope's typeMeta. Raise ProtobufDecodeError with a clear
    message on a bad magic, truncated/malformed wire data, wrong wire types, or an unsupported
    kind."""
    if not body.startswith(MAGIC):
        raise ProtobufDecodeError("protobuf body does not start with the 'k8s\\x00' magic prefix")
    classes = _message_classes()
    envelope = _parse(classes, ENVELOPE, body[len(MAGIC) :])
    _reject_wrong_wire_types(envelope, ENVELOPE)
    _reject_wrong_wire_types(envelope.typeMeta, "TypeMeta")  # type: ignore[attr-defined]
    api_version: str = envelope.typeMeta.apiVersion  # type: ignore[attr-defined]
    kind: str = envelope.typeMeta.kind  # type: ignore[attr-defined]
    encoding: str = envelope.contentEncoding  # type: ignore[attr-defined]
    if encoding:
        # kubectl always sends "" here; a compressed payload is not something we can read.
        raise ProtobufDecodeError(f"unsupported protobuf contentEncoding {encoding!r}")
    message_name = KINDS.get((api_version, kind))
    if message_name is None:
        raise ProtobufDecodeError(
            f"unsupported kind {kind!r} in apiVersion {api_version!r} for a protobuf body"
        )
    raw: bytes = envelope.raw  # type: ignore[attr-defined]
    obj = _walk(_parse(classes, message_name, raw), message_name)
    return {"apiVersion": api_version, "kind": kind, **obj}


def _parse(classes: Mapping[str, type[Message]], name: str, data: bytes) -> Message:
    try:
        return classes[name].FromString(data)
    except DecodeError as exc:
        raise ProtobufDecodeError(f"malformed protobuf data in {name}: {exc}") from exc


def _walk(message: Message, name: str) -> dict[str, object]:
    """Map one decoded message onto its JSON form, omitting empty values."""
    _reject_wrong_wire_types(message, name)
    out: dict[str, object] = {}
    for _number, json_name, notation in MESSAGES[name]:
        value = _convert(message, json_name, _TypeRef.parse(notation))
        if value not in (None, "", b"", 0, False, [], {}):
            out[json_name] = value
    return out


def _convert(message: Message, field: str, ref: _TypeRef) -> object:
    value = getattr(message, field)
    if ref.name in _SCALARS:
        if ref.is_map:
            return dict(value)
        return list(value) if ref.repeated else value
    if ref.is_map:
        return {key: _message_value(item, ref.name) for key, item in value.items()}
    if ref.repeated:
        return [_message_value(item, ref.name) for item in value]
    if not message.HasField(field):
        return None
    return _message_value(value, ref.name)


def _message_value(message: Message, name: str) -> object:
    if name == TIME:
        return _rfc3339(message, _walk(message, name))
    if name in LIST_WRAPPERS:
        return list(getattr(message, LIST_WRAPPERS[name]))
    if name == QUANTITY:
        return str(message.string)  # type: ignore[attr-defined]
    return _walk(message, name)


def _rfc3339(message: Message, fields: Mapping[str, object]) -> str | None:
    """metav1.Time marshals to whole-second RFC 3339 in JSON; zero/empty means unset."""
    seconds = fields.get("seconds", 0)
    assert isinstance(seconds, int)
    if seconds in (0, _GO_ZERO_TIME_SECONDS):
        return None
    try:
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ProtobufDecodeError(f"timestamp seconds {seconds} out of range") from exc
    return rfc3339(moment)


def _reject_wrong_wire_types(message: Message, name: str) -> None:
    known = {number: json_name for number, json_name, _ in MESSAGES[name]}
    unknowns = unknown_fields.UnknownFieldSet(message)
    for index in range(len(unknowns)):
        unknown = unknowns[index]
        if unknown.field_number in known:
            raise ProtobufDecodeError(
                f"field {known[unknown.field_number]!r} (#{unknown.field_number}) of {name} "
                f"has the wrong wire type {unknown.wire_type}"
            )


@functools.cache
def _message_classes() -> Mapping[str, type[Message]]:
    """Build one message class per schema entry.

    Cached because the result is a pure function of the constant schema table (like a
    compiled regular expression); it holds no request state.
    """
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="imageregistry_k8s.proto", package=_PACKAGE, syntax="proto3"
    )
    for name, fields in MESSAGES.items():
        _add_message(file_proto.message_type.add(name=name), fields)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in MESSAGES
    }


def _add_message(proto: descriptor_pb2.DescriptorProto, fields: tuple[FieldSpec, ...]) -> None:
    for number, json_name, notation in fields:
        ref = _TypeRef.parse(notation)
        field = proto.field.add(name=json_name, number=number, json_name=json_name)
        if ref.is_map:
            entry_name = f"{json_name[0].upper()}{json_name[1:]}Entry"
            entry = proto.nested_type.add(name=entry_name)
            entry.options.map_entry = True
            _set_type(entry.field.add(name="key", number=1, json_name="key"), "string")
            _set_type(entry.field.add(name="value", number=2, json_name="value"), ref.name)
            field.label = _FDP.LABEL_REPEATED
            field.type = _FDP.TYPE_MESSAGE
            field.type_name = f".{_PACKAGE}.{proto.name}.{entry_name}"
            continue
        _set_type(field, ref.name)
        if ref.repeated:
            field.label = _FDP.LABEL_REPEATED


def _set_type(field: descriptor_pb2.FieldDescriptorProto, type_name: str) -> None:
    field.label = _FDP.LABEL_OPTIONAL
    if type_name in _SCALARS:
        field.type = _SCALARS[type_name]
    else:
        field.type = _FDP.TYPE_MESSAGE
        field.type_name = f".{_PACKAGE}.{type_name}"
