from __future__ import annotations

from typing import Any

import pytest

from imageregistry.auth.identity import Attributes, UserInfo, authenticated, service_account
from imageregistry.auth.rbac import Binding, PolicyRule, Subject, rule_allows, subject_matches

ALICE = authenticated("alice")
G = "image.alauda.io"


def rule(verbs: str, groups: str, resources: str, names: str = "") -> PolicyRule:
    def split(s: str) -> tuple[str, ...]:
        return tuple(s.split(",")) if s else ()

    return PolicyRule(split(verbs), split(groups), split(resources), split(names))


def req(verb: str, resource: str, sub: str = "", name: str = "", group: str = G) -> Attributes:
    return Attributes.for_resource(ALICE, verb, group, resource, subresource=sub, name=name)


@pytest.mark.parametrize(
    ("r", "a", "allowed"),
    [
        (rule("get", G, "imagestreams"), req("get", "imagestreams"), True),
        (rule("get", G, "imagestreams"), req("list", "imagestreams"), False),
        (rule("*", G, "imagestreams"), req("delete", "imagestreams"), True),
        (rule("get", "*", "imagestreams"), req("get", "imagestreams", group="other"), True),
        (rule("get", G, "imagestreams"), req("get", "imagestreams", group=""), False),
        (rule("get", G, "*"), req("get", "images"), True),
        # A rule on the resource does not grant its subresources, and vice versa.
        (rule("get", G, "imagestreams"), req("get", "imagestreams", "layers"), False),
        (rule("get", G, "imagestreams/layers"), req("get", "imagestreams"), False),
        (rule("get", G, "imagestreams/layers"), req("get", "imagestreams", "layers"), True),
        (rule("get", G, "imagestreams/layers"), req("get", "imagestreams", "status"), False),
        (rule("get", G, "*"), req("get", "imagestreams", "layers"), True),
        (rule("get", G, "*/layers"), req("get", "imagestreams", "layers"), True),
        (rule("get", G, "*/layers"), req("get", "imagestreams"), False),
        (rule("get", G, "*/status"), req("get", "imagestreams", "layers"), False),
        (rule("get", G, "imagestreams/*"), req("get", "imagestreams", "layers"), True),
        (rule("get", G, "imagestreams/*"), req("get", "imagestreams"), False),
        (rule("get", G, "imagestreams/*"), req("get", "images", "layers"), False),
        # resourceNames: only named requests can match.
        (rule("get", G, "imagestreams", "demo"), req("get", "imagestreams", name="demo"), True),
        (rule("get", G, "imagestreams", "demo"), req("get", "imagestreams", name="other"), False),
        (rule("list", G, "imagestreams", "demo"), req("list", "imagestreams"), False),
        (rule("get", G, "imagestreams"), req("get", "imagestreams", name="anything"), True),
    ],
)
def test_resource_rule_matching(r: PolicyRule, a: Attributes, allowed: bool) -> None:
    assert rule_allows(a, r) is allowed


def url_rule(verbs: str, *urls: str) -> PolicyRule:
    return PolicyRule(verbs=tuple(verbs.split(",")), non_resource_urls=urls)


@pytest.mark.parametrize(
    ("r", "verb", "path", "allowed"),
    [
        (url_rule("get", "/version"), "get", "/version", True),
        (url_rule("get", "/version"), "get", "/version/x", False),
        (url_rule("get", "/version"), "post", "/version", False),
        (url_rule("get", "/apis/*"), "get", "/apis/image.alauda.io/v1", True),
        (url_rule("get", "/apis/*"), "get", "/apis", False),
        (url_rule("get", "*"), "get", "/anything", True),
        (url_rule("*", "/healthz"), "delete", "/healthz", True),
    ],
)
def test_non_resource_url_matching(r: PolicyRule, verb: str, path: str, allowed: bool) -> None:
    assert rule_allows(Attributes.for_path(ALICE, verb, path), r) is allowed


def test_resource_rule_never_matches_non_resource_request() -> None:
    everything = rule("*", "*", "*")
    assert not rule_allows(Attributes.for_path(ALICE, "get", "/version"), everything)
    assert not rule_allows(req("get", "imagestreams"), url_rule("*", "*"))


@pytest.mark.parametrize(
    ("subject", "who", "binding_ns", "matches"),
    [
        (Subject("User", "alice"), authenticated("alice"), "ns", True),
        (Subject("User", "alice"), authenticated("bob"), "ns", False),
        (Subject("Group", "devs"), authenticated("bob", ["devs"]), "ns", True),
        (Subject("Group", "devs"), authenticated("devs"), "ns", False),
        (Subject("ServiceAccount", "builder", "app"), service_account("app", "builder"), "x", True),
        (Subject("ServiceAccount", "builder", "app"), service_account("x", "builder"), "x", False),
        # A namespace-less SA subject means the binding's namespace, and nothing in a CRB.
        (Subject("ServiceAccount", "builder"), service_account("ns", "builder"), "ns", True),
        (Subject("ServiceAccount", "builder"), service_account("ns", "builder"), "", False),
        (Subject("User", "system:serviceaccount:app:b"), service_account("app", "b"), "", True),
        (Subject("Robot", "alice"), authenticated("alice"), "ns", False),
    ],
)
def test_subject_matching(subject: Subject, who: UserInfo, binding_ns: str, matches: bool) -> None:
    assert subject_matches(subject, who, binding_ns) is matches


def test_binding_from_kubectl_json() -> None:
    obj: dict[str, Any] = {
        "kind": "RoleBinding",
        "metadata": {"name": "rb", "namespace": "team-a"},
        "subjects": [{"kind": "ServiceAccount", "apiGroup": "", "name": "b", "namespace": "app"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "v"},
    }
    binding = Binding.from_json(obj)
    assert binding.namespace == "team-a"
    assert binding.subjects == (Subject("ServiceAccount", "b", "app", ""),)
    assert binding.describe() == 'RoleBinding "rb/team-a" of ClusterRole "v"'
    assert Binding.from_json({**obj, "kind": "ClusterRoleBinding"}).namespace is None
    assert Binding.from_json({}).subjects == ()


@pytest.mark.parametrize(
    "bad",
    [
        {"verbs": "get"},
        {"verbs": ["get", 1]},
        {"verbs": ["get"], "resources": {"a": 1}},
        ["not", "a", "rule"],
    ],
)
def test_policy_rule_rejects_wrong_types(bad: Any) -> None:
    with pytest.raises(ValueError):
        PolicyRule.from_json(bad)


def test_policy_rule_round_trip() -> None:
    d = {"verbs": ["get"], "apiGroups": [G], "resources": ["imagestreams"], "resourceNames": ["x"]}
    assert PolicyRule.from_json(d).to_json() == d
    assert PolicyRule.from_json({}) == PolicyRule()
