"""`ac describe` text, laid out the way kubectl's generic describer lays it out.

kubectl describes resources it has no dedicated describer for (every `image.alauda.io`
kind) by printing Name, Namespace, Labels and Annotations, then every other field of the
object recursively with keys sorted and camelCase split into words, then Events; the
text goes through Go's `text/tabwriter` (min width 0, padding 2, spaces). `tabwrite`
reimplements that writer's column-block rule so the columns line up identically: a
column's width is fixed per run of consecutive lines that have a cell in that column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from imageregistry.quantity import InvalidQuantity, format_quantity, parse_quantity

_ACRONYMS = frozenset({"API", "URL", "UID", "OSB", "GUID"})
_SKIPPED = frozenset(
    {".metadata.name", ".metadata.namespace", ".metadata.labels", ".metadata.annotations"}
)
_MAX_ANNOTATION = 140
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+|[^A-Za-z0-9]+")


def smart_label(field: str) -> str:
    """`dockerImageManifest` -> `Docker Image Manifest`; `uid` -> `UID`; odd keys untouched."""
    if any(not (ch.isalpha() or ch == "-") for ch in field):
        return field
    parts = [p for p in _CAMEL.findall(field) if p != "_"]
    return " ".join(p.upper() if p.upper() in _ACRONYMS else p[:1].upper() + p[1:] for p in parts)


def go_value(value: Any) -> str:
    """Go's `%v` of a decoded JSON value."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else f"{value:g}"
    if isinstance(value, list):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_value(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _content(out: list[str], level: int, content: Mapping[str, Any], prefix: str) -> None:
    pad = "  " * level
    for field in sorted(content):
        value = content[field]
        path = f"{prefix}.{field}"
        if path in _SKIPPED:
            continue
        if isinstance(value, dict):
            out.append(f"{pad}{smart_label(field)}:")
            _content(out, level + 1, value, path)
        elif isinstance(value, list):
            out.append(f"{pad}{smart_label(field)}:")
            for child in value:
                if isinstance(child, dict):
                    _content(out, level + 1, child, path)
                else:
                    out.append(f"{pad}  {go_value(child)}")
        else:
            out.append(f"{pad}{smart_label(field)}:\t{go_value(value)}")


def _labels(title: str, labels: Mapping[str, str] | None) -> list[str]:
    keys = sorted(labels or {})
    if not keys or labels is None:
        return [f"{title}:\t<none>"]
    return [
        f"{title}:\t{k}={labels[k]}" if i == 0 else f"\t{k}={labels[k]}" for i, k in enumerate(keys)
    ]


def _annotations(annotations: Mapping[str, str] | None) -> list[str]:
    values = {
        k: v
        for k, v in (annotations or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    if not values:
        return ["Annotations:\t<none>"]
    out: list[str] = []
    for i, key in enumerate(sorted(values)):
        lead = "Annotations:\t" if i == 0 else "\t"
        value = values[key].removesuffix("\n")
        if len(value) + len(key) + 2 > _MAX_ANNOTATION or "\n" in value:
            out.append(f"{lead}{key}:")
            limit = _MAX_ANNOTATION - 2
            out += [s if len(s) <= limit else s[:limit] + "..." for s in value.split("\n")]
        else:
            out.append(f"{lead}{key}: {value}")
    return out


def describe_object(obj: Mapping[str, Any]) -> str:
    """kubectl's generic description of one object (ending in a newline)."""
    meta = obj.get("metadata") or {}
    lines = [f"Name:\t{meta.get('name', '')}", f"Namespace:\t{meta.get('namespace', '')}"]
    lines += _labels("Labels", meta.get("labels"))
    lines += _annotations(meta.get("annotations"))
    _content(lines, 0, obj, "")
    lines.append("Events:\t<none>")
    return tabwrite(lines)


def kube_quantity(text: Any) -> str:
    """A quantity as kubectl prints it (`Quantity.String()`): the canonical form in the
    value's own format, binary (`50Mi`) when written with a binary suffix, else decimal
    (`2000000` becomes `2M`)."""
    raw = str(text)
    try:
        value = parse_quantity(raw)
    except InvalidQuantity:
        return raw
    binary = raw.rstrip().endswith("i") and value >= 1024
    return format_quantity(value, binary=binary)


def describe_quota(obj: Mapping[str, Any]) -> str:
    """kubectl's ResourceQuota describer: name, namespace, then Resource/Used/Hard rows
    from `status`, sorted by resource name."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    hard, used = status.get("hard") or {}, status.get("used") or {}
    lines = [f"Name:\t{meta.get('name', '')}", f"Namespace:\t{meta.get('namespace', '')}"]
    lines += ["Resource\tUsed\tHard", "--------\t----\t----"]
    for resource in sorted(hard):
        lines.append(
            f"{resource}\t{kube_quantity(used.get(resource, '0'))}\t{kube_quantity(hard[resource])}"
        )
    return tabwrite(lines)


def _format(rows: list[list[str]], widths: list[int], start: int, end: int, out: list[str]) -> None:
    """Go tabwriter's recursive column-block pass over rows[start:end]."""
    column = len(widths)
    line0 = start
    this = start
    while this < end:
        if column >= len(rows[this]) - 1:
            this += 1
            continue
        _write(rows, widths, line0, this, out)
        line0 = this
        width = 0
        while this < end and column < len(rows[this]) - 1:
            width = max(width, len(rows[this][column]) + 2)
            this += 1
        _format(rows, [*widths, width], line0, this, out)
        line0 = this
    _write(rows, widths, line0, end, out)


def _write(rows: list[list[str]], widths: list[int], start: int, end: int, out: list[str]) -> None:
    for row in rows[start:end]:
        text = "".join(c.ljust(widths[j]) if j < len(widths) else c for j, c in enumerate(row))
        out.append(text)


def tabwrite(lines: list[str]) -> str:
    """Align tab-separated cells like Go's `tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)`."""
    rows = [line.split("\t") for line in lines]
    out: list[str] = []
    _format(rows, [], 0, len(rows), out)
    return "\n".join(out) + "\n"
