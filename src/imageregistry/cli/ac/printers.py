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


class _GoStyleDumper(yaml.SafeDumper):
    """PyYAML tuned toward go-yaml's choices (double quotes, literal blocks)."""

    def choose_scalar_style(self) -> str:
        style = super().choose_scalar_style()
        return '"' if style == "'" else style


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_GoStyleDumper.add_representer(str, _str)


def to_yaml(obj: Any) -> str:
    return yaml.dump(
        obj, Dumper=_GoStyleDumper, sort_keys=True, default_flow_style=False, width=1 << 30
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
    out: list[str] = []
    for literal, expr in re.findall(r"([^{]*)(?:\{([^}]*)\})?", template):
        out.append(literal)
        if not expr:
            continue
        expr = expr.strip()
        if expr.startswith('"') and expr.endswith('"'):
            out.append(json.loads(expr))
            continue
        if not expr.startswith((".", "[", "$")):
            raise CliError(f"unsupported JSONPath expression {{{expr}}}")
        found = _walk([obj], expr.lstrip("$"))
        out.append(" ".join(v if isinstance(v, str) else json.dumps(v) for v in found))
    return "".join(out)
