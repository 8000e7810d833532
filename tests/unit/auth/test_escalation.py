from __future__ import annotations

from imageregistry.auth.escalation import covers, escalation_message
from imageregistry.auth.identity import authenticated
from imageregistry.auth.rbac import PolicyRule, rules_from_json
from imageregistry.auth.resolver import RuleResolver

from .fake_rbac import InMemoryRbac, role_binding, user

G = "image.alauda.io"


def r(verbs: str, resources: str, names: str = "", group: str = G) -> PolicyRule:
    def split(s: str) -> tuple[str, ...]:
        return tuple(s.split(",")) if s else ()

    return PolicyRule(split(verbs), (group,), split(resources), split(names))


def test_exact_and_wildcard_owner_cover() -> None:
    assert covers([r("get,list", "imagestreams")], [r("get", "imagestreams")]) == (True, [])
    assert covers([PolicyRule(("*",), ("*",), ("*",))], [r("delete", "images")])[0]
    assert covers([r("get", "*")], [r("get", "imagestreams/layers")])[0]
    assert covers([r("get", "*/layers")], [r("get", "imagestreams/layers")])[0]


def test_uncovered_units_are_reported_atomically() -> None:
    ok, missing = covers([r("get", "imagestreams")], [r("get,delete", "imagestreams,images")])
    assert not ok
    assert missing == [r("get", "images"), r("delete", "imagestreams"), r("delete", "images")]


def test_requested_wildcard_needs_owner_wildcard() -> None:
    owner = [r("get,list,watch,create,update,patch,delete", "imagestreams")]
    assert not covers(owner, [r("*", "imagestreams")])[0]
    assert not covers([r("get", "imagestreams,images")], [r("get", "*")])[0]
    assert covers([r("*", "imagestreams")], [r("*", "imagestreams")])[0]


def test_resource_names() -> None:
    assert covers([r("get", "imagestreams", "a")], [r("get", "imagestreams", "a")])[0]
    assert not covers([r("get", "imagestreams", "a")], [r("get", "imagestreams", "b")])[0]
    assert not covers([r("get", "imagestreams", "a")], [r("get", "imagestreams")])[0]
    assert covers([r("get", "imagestreams")], [r("get", "imagestreams", "a,b")])[0]


def test_subresource_is_not_covered_by_the_resource() -> None:
    assert not covers([r("get", "imagestreams")], [r("get", "imagestreams/layers")])[0]
    assert covers([r("get", "imagestreams/*")], [r("get", "imagestreams/layers")])[0]
    assert not covers([r("get", "imagestreams/layers")], [r("get", "imagestreams/*")])[0]


def test_non_resource_urls() -> None:
    def u(verbs: str, *urls: str) -> PolicyRule:
        return PolicyRule(verbs=tuple(verbs.split(",")), non_resource_urls=urls)

    assert covers([u("get", "/apis/*")], [u("get", "/apis/x", "/apis/*")])[0]
    assert not covers([u("get", "/apis/x")], [u("get", "/apis/*")])[0]
    assert not covers([u("get", "/version")], [u("post", "/version")])[0]
    assert covers([u("*", "*")], [u("get", "/anything")])[0]
    # Resource rules never cover URLs.
    assert not covers([PolicyRule(("*",), ("*",), ("*",))], [u("get", "/version")])[0]


def test_namespace_admin_cannot_grant_cluster_admin() -> None:
    store = InMemoryRbac([role_binding("a", "team-a", "admin", user("alice"))])
    resolver = RuleResolver(store, store)
    owner = resolver.rules_for(authenticated("alice"), "team-a")
    cluster_admin = store.get_cluster_role("cluster-admin")
    assert cluster_admin is not None
    ok, missing = covers(owner, cluster_admin)
    assert not ok and missing
    # ...but can grant pushing, which they hold.
    pusher = store.get_cluster_role("system:image-pusher")
    assert pusher is not None
    assert covers(owner, pusher) == (True, [])


def test_escalation_message() -> None:
    text = escalation_message(
        authenticated("alice"),
        list(rules_from_json([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}])),
    )
    assert text.startswith('user "alice" (groups=["system:authenticated"]) is attempting to grant')
    assert '{APIGroups:["*"], Resources:["*"], Verbs:["*"]}' in text
