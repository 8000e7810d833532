"""The audit policy file: Kubernetes' `audit.k8s.io/v1` Policy, first matching rule wins,
and every mistake refused with one line naming its place."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from imageregistry.auth.identity import Attributes, UserInfo, anonymous, authenticated
from imageregistry.observability.auditpolicy import (
    METADATA,
    NONE,
    REQUEST,
    REQUEST_RESPONSE,
    PolicyError,
    load_policy,
    parse_policy,
)

IMAGES = "image.alauda.io"
RBAC = "rbac.authorization.k8s.io"

POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    userGroups: ["system:nodes"]
  - level: None
    nonResourceURLs: ["/healthz*", "/livez", "/readyz"]
  - level: RequestResponse
    resources:
      - group: rbac.authorization.k8s.io
        resources: [rolebindings]
  - level: Request
    verbs: [create]
    resources:
      - group: ""
        resources: [serviceaccounts/token]
    omitStages: [Panic]
  - level: Metadata
    resources:
      - group: image.alauda.io
    omitManagedFields: true
  - level: Request
    namespaces: [""]
  - level: Metadata
"""

ALICE = authenticated("alice")
NODE = authenticated("system:node:n1", ["system:nodes"])


def attrs(
    user: UserInfo,
    verb: str,
    group: str,
    resource: str,
    sub: str = "",
    name: str = "",
    ns: str = "",
) -> Attributes:
    return Attributes.for_resource(
        user, verb, group, resource, subresource=sub, name=name, namespace=ns
    )


def test_first_matching_rule_decides_the_level() -> None:
    policy = parse_policy(yaml.safe_load(POLICY))
    pull = attrs(ALICE, "get", IMAGES, "imagestreams", "layers", "app", "team")
    assert policy.evaluate(ALICE, pull).level == METADATA
    assert policy.evaluate(NODE, attrs(NODE, "get", IMAGES, "imagestreams", "layers")).level == NONE
    binding = attrs(ALICE, "create", RBAC, "rolebindings", ns="team")
    assert policy.evaluate(ALICE, binding).level == REQUEST_RESPONSE
    # "rolebindings" does not match the roles of the same group; they fall through to the
    # catch-all (namespaced, so not the namespaces: [""] rule)
    assert policy.evaluate(ALICE, attrs(ALICE, "create", RBAC, "roles", ns="team")).level == (
        METADATA
    )
    cluster_role = attrs(ALICE, "create", RBAC, "clusterroles")
    assert policy.evaluate(ALICE, cluster_role).level == REQUEST  # namespaces: [""]
    token = attrs(ALICE, "create", "", "serviceaccounts", "token", "builder", "team")
    outcome = policy.evaluate(ALICE, token)
    assert outcome.level == REQUEST
    assert outcome.omit_stages == {"RequestReceived", "Panic"}  # the policy's and the rule's
    assert policy.evaluate(ALICE, attrs(ALICE, "get", IMAGES, "images")).omit_managed_fields


def test_non_resource_urls_match_exactly_or_by_prefix() -> None:
    policy = parse_policy(yaml.safe_load(POLICY))
    user = anonymous()
    for path, level in (
        ("/healthz", NONE),
        ("/healthz/ready", NONE),
        ("/livez", NONE),
        ("/livez/x", METADATA),  # exact entry: no prefix
        ("/metrics", METADATA),
    ):
        assert policy.evaluate(user, Attributes.for_path(user, "get", path)).level == level, path


def test_subresource_forms() -> None:
    policy = parse_policy(
        {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "rules": [
                {"level": "None", "resources": [{"group": "", "resources": ["pods/log"]}]},
                {"level": "Request", "resources": [{"group": "", "resources": ["*/status"]}]},
                {"level": "RequestResponse", "resources": [{"resources": ["pods/*"]}]},
                {
                    "level": "Metadata",
                    "resources": [
                        {"group": IMAGES, "resources": ["imagestreams"], "resourceNames": ["a"]}
                    ],
                },
                {"level": "Request", "resources": [{"group": RBAC, "resources": ["*"]}]},
            ],
        }
    )
    u = ALICE
    assert policy.evaluate(u, attrs(u, "get", "", "pods", "log", "p")).level == NONE
    assert policy.evaluate(u, attrs(u, "update", "", "pods", "status", "p")).level == REQUEST
    assert policy.evaluate(u, attrs(u, "update", "", "nodes", "status")).level == REQUEST
    assert policy.evaluate(u, attrs(u, "get", "", "pods", "exec", "p")).level == REQUEST_RESPONSE
    assert policy.evaluate(u, attrs(u, "get", "", "pods", name="p")).level == NONE  # no rule
    assert policy.evaluate(u, attrs(u, "get", IMAGES, "imagestreams", name="a")).level == METADATA
    assert policy.evaluate(u, attrs(u, "get", IMAGES, "imagestreams", name="b")).level == NONE
    # "imagestreams" does not cover its subresources
    layers = attrs(u, "get", IMAGES, "imagestreams", "layers", "a")
    assert policy.evaluate(u, layers).level == NONE
    assert policy.evaluate(u, attrs(u, "delete", RBAC, "roles", "", "r", "ns")).level == REQUEST


def test_users_and_verbs() -> None:
    policy = parse_policy(
        {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "rules": [
                {"level": "RequestResponse", "users": ["alice"], "verbs": ["delete"]},
                {"level": "Metadata", "users": ["alice"]},
            ],
        }
    )
    bob = authenticated("bob")
    delete = attrs(ALICE, "delete", IMAGES, "imagestreamtags", name="a:1", ns="t")
    assert policy.evaluate(ALICE, delete).level == REQUEST_RESPONSE
    assert policy.evaluate(ALICE, attrs(ALICE, "get", IMAGES, "images")).level == METADATA
    assert policy.evaluate(bob, delete).level == NONE


HEAD = "apiVersion: audit.k8s.io/v1\nkind: Policy\n"
BAD = [
    ("kind: Policy\nrules: [{level: Metadata}]", "expected apiVersion audit.k8s.io/v1"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []", "rules must be a non-empty list"),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Everything}]", "rules[0].level"),
    (
        HEAD + "rules: [{level: None}, {level: Metadata, usres: [a]}]",
        "rules[1]: unknown field 'usres'",
    ),
    (
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [Done]\nrules: [{level: None}]",
        "omitStages: expected stages",
    ),
    (
        HEAD + "rules: [{level: None, nonResourceURLs: ['/a*b']}]",
        "* is allowed only as the last character",
    ),
    (
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: ['/a'],"
        " namespaces: [x]}]",
        "not both",
    ),
    (
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, resources: [{group: '',"
        " resourceNames: [x]}]}]",
        "resourceNames needs resources",
    ),
    (
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, resources: [{group: '',"
        " resources: ['po*s']}]}]",
        "resources[0].resources[0]",
    ),
    ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, verbs: get}]", "verbs"),
    ("rules: [level: None", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_bad_policy_is_refused_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_missing_policy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="No such file"):
        load_policy(tmp_path / "absent.yaml")


def test_the_documented_example_parses_and_means_what_it_says(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    start = text.index("<!-- audit policy example")
    block = text[
        text.index("```yaml\n", start) + 8 : text.index("```", text.index("```yaml\n", start) + 8)
    ]
    path = tmp_path / "policy.yaml"
    path.write_text(block)
    policy = load_policy(path)
    pull = attrs(ALICE, "get", IMAGES, "imagestreams", "layers", "app", "team")
    push = attrs(ALICE, "update", IMAGES, "imagestreams", "layers", "app", "team")
    assert policy.evaluate(ALICE, pull).level == NONE
    assert policy.evaluate(ALICE, push).level == METADATA
    assert policy.evaluate(NODE, push).level == NONE
    binding = attrs(ALICE, "create", RBAC, "rolebindings", ns="team")
    assert policy.evaluate(ALICE, binding).level == REQUEST_RESPONSE
    assert policy.evaluate(ALICE, attrs(ALICE, "create", IMAGES, "registrygcs")).level == REQUEST
    assert policy.evaluate(ALICE, binding).omit_stages == {"RequestReceived"}
