"""Printers for `ac get`: server-side Tables, YAML/JSON as kubectl writes them, names, JSONPath.

kubectl renders a `meta.k8s.io/v1` Table by upper-casing the column names, hiding columns
with priority > 0 unless `-o wide`, and padding columns three spaces apart. Its YAML is
keys sorted, strings that could be read as something else in double quotes, and multi-line
strings as literal blocks; its JSON is sorted keys with four-space indentation.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from imageregistry.cli.ac.errors import CliError
from imageregistry.cli.ac.output import NONE, table


def _cell(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value) if value else NONE
    return str(value)


def render_table(doc: dict[str, Any], wide: bool, namespace_column: bool) -> str:
    columns = doc.get("columnDefinitions") or []
    shown = [i for i, c in enumerate(columns) if wide or int(c.get("priority") or 0) == 0]
    headers = [str(columns[i]["name"]).upper() for i in shown]
    rows = []
    for row in doc.get("rows") or []:
        cells = row.get("cells") or []
        values = [_cell(cells[i]) if i < len(cells) else "" for i in shown]
        if namespace_column:
            meta = (row.get("object") or {}).get("metadata") or {}
            values.insert(0, str(meta.get("namespace") or ""))
        rows.append(values)
    if namespace_column:
        headers.insert(0, "NAMESPACE")
    return table(headers, rows)


# go-yaml v2 (what kubectl's sigs.k8s.io/yaml uses) double-quotes a string exactly when
# it would read back as something else: its YAML 1.1 booleans (including `y`/`n`), nulls,
# numbers, base-60 floats and timestamps. Other strings are plain when the emitter allows
# it, else single-quoted; lines fold at 80 columns; multi-line strings are literal blocks.
_GO_SPECIAL = frozenset(
    {
        *("y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO"),
        *("true", "True", "TRUE", "false", "False", "FALSE"),
        *("on", "On", "ON", "off", "Off", "OFF", "~", "null", "Null", "NULL", "<<"),
        *(".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"),
        *("-.inf", "-.Inf", "-.INF"),
    }
)
_GO_INT = re.compile(r"^[-+]?(?:0[xX][0-9a-fA-F]+|0[oO]?[0-7]+|0[bB][01]+|[0-9]+)$")
_GO_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_GO_BASE60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_GO_TIME = re.compile(
    r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
    r"(?:(?:[Tt][0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(?:\.[0-9]+)?(?:Z|[-+][0-9]{2}:[0-9]{2}))"
    r"|(?: [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(?:\.[0-9]+)?))?$"
)


def go_yaml_needs_quotes(value: str) -> bool:
    """Whether go-yaml v2 would read `value` unquoted as a non-string."""
    if value == "" or value in _GO_SPECIAL:
        return True
    plain = value.replace("_", "")
    return bool(
        _GO_INT.match(plain)
        or _GO_FLOAT.match(plain)
        or _GO_BASE60.match(value)
        or _GO_TIME.match(value)
    )


class _GoStyleDumper(yaml.SafeDumper):
    """PyYAML steered to go-yaml v2's scalar styles (the resolver check is done by hand)."""

    def choose_scalar_style(self) -> str:
        event: Any = self.event
        if self.analysis is None:
            self.analysis = self.analyze_scalar(event.value)
        if event.style in ('"', "|"):
            return super().choose_scalar_style()
        a = self.analysis
        simple = self.simple_key_context
        if not (simple and (a.empty or a.multiline)) and (
            (self.flow_level and a.allow_flow_plain)
            or (not self.flow_level and a.allow_block_plain)
        ):
            return ""
        if a.allow_single_quoted and not (simple and a.multiline):
            return "'"
        return '"'


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    style = '"' if go_yaml_needs_quotes(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_GoStyleDumper.add_representer(str, _str)


def to_yaml(obj: Any) -> str:
    return yaml.dump(
        obj, Dumper=_GoStyleDumper, sort_keys=True, default_flow_style=False, allow_unicode=True
    )


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=4, sort_keys=True, ensure_ascii=False)


_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\*|-?\d+)\]")


def _walk(values: list[Any], path: str) -> list[Any]:
    for name, index in _TOKEN.findall(path):
        nxt: list[Any] = []
        for value in values:
            if name and isinstance(value, dict) and name in value:
                nxt.append(value[name])
            elif index == "*" and isinstance(value, list):
                nxt.extend(value)
            elif index and index != "*" and isinstance(value, list):
                i = int(index)
                if -len(value) <= i < len(value):
                    nxt.append(value[i])
        values = nxt
    return values


def jsonpath(obj: Any, template: str) -> str:
    """A JSONPath subset: `{.a.b}`, `{.items[*].x}`, `{.items[0]}`, literal text, `{"\\n"}`."""
    if template.count("{") != template.count("}"):
        raise CliError(f"unclosed action in JSONPath template {template!r} — balance {{ and }}")
    out: list[str] = []
    for literal, expr in re.findall(r"([^{]*)(?:\{([^}]*)\})?", template):
        out.append(literal)
        if not expr:
            continue
        expr = expr.strip()
        if expr.startswith('"') and expr.endswith('"'):
            try:
                out.append(str(json.loads(expr)))
            except ValueError:
                raise CliError(f"invalid string literal {{{expr}}} in JSONPath template") from None
            continue
        if not expr.startswith((".", "[", "$")):
            raise CliError(f"unsupported JSONPath expression {{{expr}}}")
        found = _walk([obj], expr.lstrip("$"))
        out.append(" ".join(v if isinstance(v, str) else json.dumps(v) for v in found))
    return "".join(out)
