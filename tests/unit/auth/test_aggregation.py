from __future__ import annotations

from typing import Any

import pytest

from imageregistry.auth.aggregation import ClusterRole, aggregated_rules
from imageregistry.auth.identity import Attributes, authenticated
from imageregistry.auth.rbac import PolicyRule
from imageregistry.auth.resolver import RuleResolver

from .fake_rbac import InMemoryRbac, role_binding, user


def role(name: str, labels: dict[str, str], verbs: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels},
        "rules": [{"verbs": verbs, "apiGroups": ["x"], "resources": ["things"]}],
        **extra,
    }


MONITORING = role(
    "monitoring",
    {},
    [],
    aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"agg/monitoring": "true"}}]},
)


def test_aggregated_role_unions_matching_roles() -> None:
    roles = [
        ClusterRole.from_json(MONITORING),
        ClusterRole.from_json(role("a", {"agg/monitoring": "true"}, ["get"])),
        ClusterRole.from_json(role("b", {"agg/monitoring": "false"}, ["delete"])),
        ClusterRole.from_json(role("c", {"agg/monitoring": "true"}, ["list"])),
    ]
    rules = aggregated_rules(roles[0], roles)
    assert [r.verbs for r in rules] == [("get",), ("list",)]
    assert aggregated_rules(roles[1], roles) == roles[1].rules


def test_match_expressions() -> None:
    agg = role(
        "agg",
        {},
        [],
        aggregationRule={
            "clusterRoleSelectors": [
                {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}
            ]
        },
    )
    roles = [ClusterRole.from_json(o) for o in (agg, role("r", {"tier": "b"}, ["get"]))]
    assert aggregated_rules(roles[0], roles) == (PolicyRule(("get",), ("x",), ("things",)),)
    with pytest.raises(ValueError):
        ClusterRole.from_json(
            role(
                "bad",
                {},
                [],
                aggregationRule={
                    "clusterRoleSelectors": [{"matchExpressions": [{"key": "k", "operator": "Gt"}]}]
                },
            )
        )


def test_resolver_sees_aggregated_rules_through_the_store() -> None:
    store = InMemoryRbac(
        [
            MONITORING,
            role("a", {"agg/monitoring": "true"}, ["get"]),
            role_binding("m", "ns", "monitoring", user("alice")),
        ]
    )
    attrs = Attributes.for_resource(authenticated("alice"), "get", "x", "things", namespace="ns")
    assert RuleResolver(store, store).authorize(attrs).allowed
