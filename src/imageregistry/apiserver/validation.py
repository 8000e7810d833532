"""Name and field validation shared by the resource strategies (422 Invalid causes).

Kubernetes names come in three flavours: DNS-1123 labels (namespaces), DNS-1123 subdomains
(service accounts and most objects) and path-segment names (RBAC objects, which allow `:`
as in `system:image-puller`). The messages mirror kube-apiserver's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from imageregistry.apiserver.status import FieldCause

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")

_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")

NameCheck = Callable[[str], list[str]]


def dns1123_label(name: str) -> list[str]:
    errors = []
    if len(name) > 63:
        errors.append("must be no more than 63 characters")
    if not _LABEL.match(name):
        errors.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
            "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
            "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    return errors


def dns1123_subdomain(name: str) -> list[str]:
    errors = []
    if len(name) > 253:
        errors.append("must be no more than 253 characters")
    if not _SUBDOMAIN.match(name):
        errors.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character (e.g. "
            "'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    return errors


def path_segment_name(name: str) -> list[str]:
    if name in (".", ".."):
        return [f'may not be "{name}"']
    for bad in ("/", "%"):
        if bad in name:
            return [f"may not contain '{bad}'"]
    if len(name) > 253:
        return ["must be no more than 253 characters"]
    return []


def name_causes(name: str, check: NameCheck) -> list[FieldCause]:
    if not name:
        return [
            FieldCause(
                "metadata.name",
                "Required value: name or generateName is required",
                "FieldValueRequired",
            )
        ]
    return [
        FieldCause("metadata.name", f'Invalid value: "{name}": {message}')
        for message in check(name)
    ]


def label_causes(meta: dict[str, Any]) -> list[FieldCause]:
    causes = []
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            causes.append(
                FieldCause(f"metadata.{key}", "Invalid value: must map strings to strings")
            )
            continue
        for k, v in value.items():
            causes += [FieldCause(f"metadata.{key}", f'Invalid value: "{k}": {m}') for m in _key(k)]
            if key == "labels" and v and (len(v) > 63 or not _QUALIFIED.match(v)):
                causes.append(
                    FieldCause(
                        "metadata.labels",
                        f'Invalid value: "{v}": a valid label must be an empty string or 63 '
                        "characters or less, consisting of alphanumeric characters, '-', '_' or "
                        "'.', and must start and end with an alphanumeric character",
                    )
                )
    return causes


def _key(key: str) -> list[str]:
    """A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of
    at most 63 characters (kube's IsQualifiedName)."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or dns1123_subdomain(prefix)):
        return ["prefix part must be a lowercase RFC 1123 subdomain"]
    if len(name) > 63 or not _QUALIFIED.match(name):
        return [
            "name part must consist of alphanumeric characters, '-', '_' or '.', must start "
            "and end with an alphanumeric character and be at most 63 characters"
        ]
    return []


def required(value: Any, path: str) -> list[FieldCause]:
    if value in (None, "", [], {}):
        return [FieldCause(path, "Required value", "FieldValueRequired")]
    return []
