"""Label and field selectors of list and watch requests.

Label selectors follow the Kubernetes string syntax: `k=v`, `k==v`, `k!=v`, `k`, `!k`,
`k in (a,b)`, `k notin (a,b)`, comma-separated (all must hold). Field selectors support
what kubectl and watch-by-name use: `metadata.name` and `metadata.namespace` with `=`, `==`
or `!=`. Anything else is a 400, as kube-apiserver answers for an unsupported field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from imageregistry.apiserver.status import bad_request

Predicate = Callable[[dict[str, Any]], bool]

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?\Z")
_SET_RE = re.compile(r"^\s*(!?)([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _label_requirement(term: str) -> Callable[[Mapping[str, str]], bool]:
    m = _SET_RE.match(term)
    if m:
        key, op = m.group(2), m.group(3)
        values = {v.strip() for v in m.group(4).split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for op in ("!=", "==", "="):
        if op in term:
            key, _, value = term.partition(op)
            key, value = key.strip(), value.strip()
            if not key or not _LABEL_VALUE.match(value):
                # `a===b` is key `a`, value `=b`: kube rejects the value, not matches nothing
                break
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if term.startswith("!") and re.fullmatch(r"![A-Za-z0-9_./-]+", term):
        key = term[1:]
        return lambda labels: key not in labels
    if re.fullmatch(r"[A-Za-z0-9_./-]+", term):
        return lambda labels: term in labels
    raise bad_request(f'unable to parse requirement: invalid label selector "{term}"')


def label_predicate(selector: str) -> Predicate:
    reqs = [_label_requirement(t) for t in _split_top(selector)]

    def matches(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r(labels) for r in reqs)

    return matches


def parse_field_selector(selector: str) -> list[tuple[str, str, str]]:
    """[(field, op, value)] with op `=` or `!=`; 400 for unsupported fields."""
    out = []
    for term in _split_top(selector):
        op = "!=" if "!=" in term else ("==" if "==" in term else "=")
        if op not in term:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        key, _, value = term.partition(op)
        key = key.strip()
        if key not in ("metadata.name", "metadata.namespace"):
            raise bad_request(f'field label not supported: "{key}"')
        out.append((key, "!=" if op == "!=" else "=", value.strip()))
    return out


def field_predicate(selector: str) -> Predicate:
    terms = parse_field_selector(selector)

    def matches(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        for key, op, value in terms:
            actual = meta.get(key.split(".", 1)[1]) or ""
            if (actual == value) != (op == "="):
                return False
        return True

    return matches


def name_from_field_selector(selector: str) -> str | None:
    """The name an equality `metadata.name=` selector pins, for an indexed lookup."""
    for key, op, value in parse_field_selector(selector):
        if key == "metadata.name" and op == "=":
            return value
    return None
