"""Aggregated ClusterRoles: a role whose rules are the union of the roles its selectors match.

Kubernetes computes aggregation in a controller that rewrites the aggregated role's `rules`,
and the authorizer only ever reads `rules`. This module is the pure half of that controller:
`ClusterRole.from_json` parses the object (including `aggregationRule.clusterRoleSelectors`
with `matchLabels` and `matchExpressions`), and `aggregated_rules` computes the rules an
aggregated role should hold given every ClusterRole in the store. The store calls it when a
ClusterRole is written and stores the result, so `RoleGetter` stays a plain lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .rbac import PolicyRule, rules_from_json


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be an object")
    return value


def _str_map(value: Any, what: str) -> tuple[tuple[str, str], ...]:
    items = _mapping(value, what)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in items.items()):
        raise ValueError(f"{what} must map strings to strings")
    return tuple(sorted(items.items()))


@dataclass(frozen=True)
class Requirement:
    """One `matchExpressions` entry: operator In, NotIn, Exists or DoesNotExist."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: Any) -> Requirement:
        d = _mapping(d, "matchExpressions entry")
        values = d.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError("values must be a list of strings")
        op = d.get("operator")
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unsupported label selector operator {op!r}")
        key = d.get("key")
        if not isinstance(key, str):
            raise ValueError("key must be a string")
        return cls(key=key, operator=op, values=tuple(values))

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        found = self.key in labels and labels[self.key] in self.values
        return found if self.operator == "In" else not found


@dataclass(frozen=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @classmethod
    def from_json(cls, d: Any) -> LabelSelector:
        d = _mapping(d, "label selector")
        exprs = d.get("matchExpressions") or []
        if not isinstance(exprs, list):
            raise ValueError("matchExpressions must be a list")
        return cls(
            match_labels=_str_map(d.get("matchLabels"), "matchLabels"),
            match_expressions=tuple(Requirement.from_json(e) for e in exprs),
        )

    def matches(self, labels: Mapping[str, str]) -> bool:
        """An empty selector matches nothing here: aggregating every role is never meant."""
        if not self.match_labels and not self.match_expressions:
            return False
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        return all(r.matches(labels) for r in self.match_expressions)


@dataclass(frozen=True)
class ClusterRole:
    name: str
    labels: tuple[tuple[str, str], ...]
    rules: tuple[PolicyRule, ...]
    selectors: tuple[LabelSelector, ...] = ()

    @classmethod
    def from_json(cls, d: Any) -> ClusterRole:
        d = _mapping(d, "ClusterRole")
        meta = _mapping(d.get("metadata"), "metadata")
        name = meta.get("name", "")
        if not isinstance(name, str):
            raise ValueError("metadata.name must be a string")
        agg = _mapping(d.get("aggregationRule"), "aggregationRule")
        selectors = agg.get("clusterRoleSelectors") or []
        if not isinstance(selectors, list):
            raise ValueError("clusterRoleSelectors must be a list")
        return cls(
            name=name,
            labels=_str_map(meta.get("labels"), "metadata.labels"),
            rules=rules_from_json(d.get("rules")),
            selectors=tuple(LabelSelector.from_json(s) for s in selectors),
        )

    @property
    def is_aggregated(self) -> bool:
        return bool(self.selectors)


def aggregated_rules(role: ClusterRole, all_roles: Iterable[ClusterRole]) -> tuple[PolicyRule, ...]:
    """The rules `role` holds: its own if not aggregated, else the de-duplicated union of the
    rules of every other role any selector matches, in name order (stable output)."""
    if not role.is_aggregated:
        return role.rules
    union: dict[PolicyRule, None] = {}
    for other in sorted(all_roles, key=lambda r: r.name):
        if other.name == role.name:
            continue
        labels = dict(other.labels)
        if any(s.matches(labels) for s in role.selectors):
            union.update(dict.fromkeys(other.rules))
    return tuple(union)
