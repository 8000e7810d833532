from __future__ import annotations

from typing import Any

from imageregistry.auth.identity import (
    Attributes,
    UserInfo,
    anonymous,
    authenticated,
    service_account,
)
from imageregistry.auth.rbac import PolicyRule
from imageregistry.auth.resolver import (
    NonResourceRule,
    ResourceRule,
    RuleResolver,
    forbidden_message,
)

from .fake_rbac import (
    InMemoryRbac,
    cluster_role_binding,
    group,
    role_binding,
    user,
)
from .fake_rbac import (
    service_account as sa_subject,
)

G = "image.alauda.io"
BUILDER = service_account("app", "builder")


def resolver(*objects: dict[str, Any]) -> RuleResolver:
    store = InMemoryRbac(objects)
    return RuleResolver(store, store)


def pull(who: UserInfo, ns: str, stream: str = "demo") -> Attributes:
    return Attributes.for_resource(
        who, "get", G, "imagestreams", subresource="layers", name=stream, namespace=ns
    )


def can(r: RuleResolver, attrs: Attributes) -> bool:
    return r.authorize(attrs).allowed


def test_seed_service_account_puller_in_one_namespace_only() -> None:
    r = resolver(
        role_binding("pull", "team-a", "system:image-puller", sa_subject("app", "builder"))
    )
    assert can(r, pull(BUILDER, "team-a"))
    assert not can(r, pull(BUILDER, "team-b"))
    push = Attributes.for_resource(
        BUILDER, "update", G, "imagestreams", subresource="layers", name="demo", namespace="team-a"
    )
    assert not can(r, push)


def test_seed_can_i_sends_layers_as_a_name() -> None:
    # `kubectl auth can-i get imagestreams/layers.image.alauda.io` (docs/kubectl.md#auth-can-i) is a
    # get on imagestreams named "layers.image.alauda.io"; Decision (puller reads metadata) allows
    # it.
    r = resolver(
        role_binding("pull", "team-a", "system:image-puller", sa_subject("app", "builder"))
    )
    attrs = Attributes.for_resource(
        BUILDER, "get", G, "imagestreams", name="layers.image.alauda.io", namespace="team-a"
    )
    assert can(r, attrs)
    assert not can(
        r, Attributes.for_resource(BUILDER, "list", G, "imagestreams", namespace="team-a")
    )


def test_allow_reason_names_binding_role_and_subject() -> None:
    r = resolver(
        role_binding("pull", "team-a", "system:image-puller", sa_subject("app", "builder"))
    )
    assert r.authorize(pull(BUILDER, "team-a")).reason == (
        'RBAC: allowed by RoleBinding "pull/team-a" of ClusterRole "system:image-puller" '
        'to ServiceAccount "builder/app"'
    )


def test_role_binding_to_cluster_role_applies_in_its_namespace_only() -> None:
    alice = authenticated("alice")
    r = resolver(role_binding("v", "team-a", "view", user("alice")))
    get_is = Attributes.for_resource(alice, "get", G, "imagestreams", name="x", namespace="team-a")
    assert can(r, get_is)
    assert not can(r, Attributes.for_resource(alice, "get", G, "imagestreams", name="x"))
    assert not can(
        r, Attributes.for_resource(alice, "get", G, "imagestreams", name="x", namespace="other")
    )


def test_cluster_role_binding_applies_everywhere_and_cluster_wide() -> None:
    pruner = authenticated("pruner")
    r = resolver(cluster_role_binding("p", "system:image-pruner", user("pruner")))
    assert can(r, Attributes.for_resource(pruner, "list", G, "imagestreams"))
    assert can(r, Attributes.for_resource(pruner, "list", G, "imagestreams", namespace="any"))
    assert can(r, Attributes.for_resource(pruner, "delete", G, "images", name="sha256:ab"))
    decision = r.authorize(Attributes.for_resource(pruner, "delete", G, "images", name="x"))
    assert decision.reason == (
        'RBAC: allowed by ClusterRoleBinding "p" of ClusterRole "system:image-pruner" '
        'to User "pruner"'
    )
    assert not can(r, Attributes.for_resource(pruner, "delete", G, "imagestreams", name="x"))


def test_namespaced_role() -> None:
    role = {
        "kind": "Role",
        "metadata": {"name": "tagger", "namespace": "team-a"},
        "rules": [{"verbs": ["delete"], "apiGroups": [G], "resources": ["imagestreamtags"]}],
    }
    alice = authenticated("alice")
    r = resolver(role, role_binding("t", "team-a", "tagger", user("alice"), kind="Role"))
    attrs = Attributes.for_resource(alice, "delete", G, "imagestreamtags", namespace="team-a")
    assert can(r, attrs)
    # A RoleBinding elsewhere cannot borrow team-a's Role.
    r2 = resolver(role, role_binding("t", "team-b", "tagger", user("alice"), kind="Role"))
    assert not can(
        r2, Attributes.for_resource(alice, "delete", G, "imagestreamtags", namespace="team-b")
    )


def test_groups_unauthenticated_makes_images_public() -> None:
    r = resolver(
        role_binding("public", "team-a", "system:image-puller", group("system:unauthenticated"))
    )
    assert can(r, pull(anonymous(), "team-a"))
    assert not can(r, pull(authenticated("alice"), "team-a"))
    assert not can(r, pull(anonymous(), "team-b"))


def test_group_authenticated_and_service_account_groups() -> None:
    r = resolver(
        role_binding("all", "team-a", "system:image-puller", group("system:authenticated")),
        role_binding("sas", "team-b", "system:image-puller", group("system:serviceaccounts:app")),
    )
    assert can(r, pull(authenticated("alice"), "team-a"))
    assert not can(r, pull(anonymous(), "team-a"))
    assert can(r, pull(BUILDER, "team-b"))
    assert not can(r, pull(service_account("other", "builder"), "team-b"))


def test_masters_are_superusers_and_default_is_deny() -> None:
    r = resolver()
    root = authenticated("root", ["system:masters"])
    assert can(r, Attributes.for_resource(root, "impersonate", "", "users", name="bob"))
    assert can(r, Attributes.for_path(root, "delete", "/anything"))
    assert not can(r, Attributes.for_resource(authenticated("bob"), "get", G, "images"))


def test_discovery_and_self_reviews_for_everyone() -> None:
    r = resolver()
    for who in (anonymous(), authenticated("alice"), BUILDER):
        assert can(r, Attributes.for_path(who, "get", "/apis/image.alauda.io/v1"))
        assert can(r, Attributes.for_path(who, "get", "/version"))
        assert not can(r, Attributes.for_path(who, "post", "/version"))
    ssar = Attributes.for_resource(
        authenticated("alice"), "create", "authorization.k8s.io", "selfsubjectaccessreviews"
    )
    assert can(r, ssar)
    assert not can(
        r, Attributes.for_resource(anonymous(), ssar.verb, ssar.api_group, ssar.resource)
    )


def test_missing_role_is_an_evaluation_error_not_a_crash() -> None:
    r = resolver(role_binding("x", "team-a", "no-such-role", user("alice")))
    decision = r.authorize(pull(authenticated("alice"), "team-a"))
    assert not decision.allowed
    assert (
        'clusterrole.rbac.authorization.k8s.io "no-such-role" not found'
        in decision.evaluation_error
    )


def test_rules_review_for_can_i_list() -> None:
    r = resolver(
        role_binding("pull", "team-a", "system:image-puller", sa_subject("app", "builder"))
    )
    review = r.rules_review(BUILDER, "team-a")
    assert ResourceRule(("get",), (G,), ("imagestreams/layers",)) in review.resource_rules
    assert NonResourceRule(("get",), ("/version",)) not in review.non_resource_rules
    assert any("/version" in n.non_resource_urls for n in review.non_resource_rules)
    assert not review.incomplete
    other = r.rules_review(BUILDER, "team-b")
    assert all("imagestreams/layers" not in rr.resources for rr in other.resource_rules)
    assert review.resource_rules[0].to_json()["verbs"]


def test_rules_review_reports_missing_roles_as_incomplete() -> None:
    r = resolver(role_binding("x", "team-a", "gone", user("alice")))
    review = r.rules_review(authenticated("alice"), "team-a")
    assert review.incomplete
    assert "gone" in review.evaluation_error


def test_rules_for_masters_include_everything() -> None:
    rules = resolver().rules_for(authenticated("root", ["system:masters"]), "")
    assert PolicyRule(verbs=("*",), api_groups=("*",), resources=("*",)) in rules


def test_forbidden_message_matches_kube_wording() -> None:
    alice = authenticated("alice")
    assert forbidden_message(pull(alice, "team-a")) == (
        'User "alice" cannot get resource "imagestreams/layers" in API group '
        '"image.alauda.io" in the namespace "team-a"'
    )
    assert forbidden_message(Attributes.for_resource(alice, "list", G, "images")).endswith(
        "at the cluster scope"
    )
    assert forbidden_message(Attributes.for_path(alice, "get", "/x"), "r") == (
        'User "alice" cannot get path "/x": r'
    )
