"""The bootstrap ClusterRoles and ClusterRoleBindings, as `rbac.authorization.k8s.io/v1` objects.

The server creates these on first start and reconciles them on upgrade (objects carrying the
`rbac.authorization.kubernetes.io/autoupdate: "true"` annotation are overwritten). They are plain
JSON-shaped dicts because they enter the generic object store exactly like objects a user creates
with kubectl. The image roles follow docs/behaviour.md#access-control; `admin`/`edit`/`view` carry
the usual Kubernetes meaning restricted to the resources this server serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imageregistry import apigroups

from .identity import GROUP_AUTHENTICATED, GROUP_MASTERS, GROUP_UNAUTHENTICATED
from .rbac import RBAC_GROUP

IMAGE_GROUP = apigroups.IMAGE
AUTHORIZATION_GROUP = apigroups.AUTHORIZATION
AUTHENTICATION_GROUP = apigroups.AUTHENTICATION

BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
AUTOUPDATE_ANNOTATION = "rbac.authorization.kubernetes.io/autoupdate"

READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete", "deletecollection")

PULLER = "system:image-puller"
PUSHER = "system:image-pusher"
DELETER = "system:image-deleter"
PRUNER = "system:image-pruner"
SIGNER = "system:image-signer"
CLUSTER_ADMIN = "cluster-admin"
DISCOVERY = "system:discovery"
BASIC_USER = "system:basic-user"
# kube-apiserver's role for scrapers; bound to the group of the same name, which nobody is
# in until an operator puts a scraper there or binds the role to its service account.
MONITORING = "system:monitoring"
# kube-apiserver's role for servers that delegate authentication and authorization to
# it, as this registry does in cluster mode (auth/cluster/).
AUTH_DELEGATOR = "system:auth-delegator"

# Resources the prune / registry-GC operations are exposed as (prune issue).
PRUNE_OPERATIONS = ("imageprunes", "registrygcs", "registryverifications")
PRUNE_RUNS = "imagepruneruns"

MONITORING_URLS = ("/metrics", "/healthz", "/livez", "/readyz")

DISCOVERY_URLS = (
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/version",
    "/version/",
    "/healthz",
    "/livez",
    "/readyz",
    "/openapi",
    "/openapi/*",
)


def rule(
    verbs: Sequence[str], group: str, resources: Sequence[str], names: Sequence[str] = ()
) -> dict[str, Any]:
    out: dict[str, Any] = {"verbs": list(verbs), "apiGroups": [group], "resources": list(resources)}
    if names:
        out["resourceNames"] = list(names)
    return out


def url_rule(verbs: Sequence[str], urls: Sequence[str]) -> dict[str, Any]:
    return {"verbs": list(verbs), "nonResourceURLs": list(urls)}


def _metadata(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": dict(BOOTSTRAP_LABELS),
        "annotations": {AUTOUPDATE_ANNOTATION: "true"},
    }


def cluster_role(name: str, rules: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": _metadata(name),
        "rules": list(rules),
    }


def cluster_role_binding(name: str, role: str, groups: Sequence[str]) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _metadata(name),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "Group", "apiGroup": RBAC_GROUP, "name": g} for g in groups],
    }


def _puller_rules() -> list[dict[str, Any]]:
    # Pullers read metadata (docs/behaviour.md#bootstrap-roles): `get` on the stream objects too.
    return [
        rule(["get"], IMAGE_GROUP, ["imagestreams/layers"]),
        rule(["get"], IMAGE_GROUP, ["imagestreams", "imagestreamtags", "imagestreamimages"]),
    ]


def _image_roles() -> list[dict[str, Any]]:
    return [
        cluster_role(PULLER, _puller_rules()),
        cluster_role(
            PUSHER,
            [
                *_puller_rules(),
                rule(["get", "update"], IMAGE_GROUP, ["imagestreams/layers"]),
                # Decision (pushers create streams): the push itself creates the stream.
                rule(["create"], IMAGE_GROUP, ["imagestreams"]),
            ],
        ),
        cluster_role(
            DELETER,
            [
                rule(
                    ["get", "delete"],
                    IMAGE_GROUP,
                    ["imagestreams", "imagestreamtags", "imagestreamimages"],
                )
            ],
        ),
        cluster_role(
            PRUNER,
            [
                rule([*READ, "delete"], IMAGE_GROUP, ["images"]),
                rule(READ, IMAGE_GROUP, ["imagestreams"]),
                rule(["update"], IMAGE_GROUP, ["imagestreams/status"]),
                rule(["create"], IMAGE_GROUP, PRUNE_OPERATIONS),
                rule(["get", "list"], IMAGE_GROUP, [PRUNE_RUNS]),
            ],
        ),
        cluster_role(
            SIGNER,
            [
                rule(["get"], IMAGE_GROUP, ["images", "imagestreams/layers"]),
                rule(["create", "delete"], IMAGE_GROUP, ["imagesignatures"]),
            ],
        ),
    ]


_STREAM_OBJECTS = ("imagestreams", "imagestreamtags", "imagestreamimages")
# Namespace policy, like ResourceQuota and LimitRange in kube: `view` (and so `edit`) read
# it, only `admin` writes it; the image roles (pushers, deleters) get nothing of it.
TAG_POLICIES = "imagetagpolicies"


def _view_rules() -> list[dict[str, Any]]:
    return [
        rule(READ, "", ["namespaces", "serviceaccounts"]),
        # As in Kubernetes: every namespace role reads quotas and limits, none writes them
        # (a tenant's admin must not lift the tenant's own quota); cluster-admin does.
        rule(READ, "", ["resourcequotas", "resourcequotas/status", "limitranges"]),
        rule(READ, IMAGE_GROUP, [*_STREAM_OBJECTS, "imagestreams/status", TAG_POLICIES]),
        # Viewers may pull: everything a pull returns is already visible to them above.
        rule(["get"], IMAGE_GROUP, ["imagestreams/layers"]),
    ]


def _edit_rules() -> list[dict[str, Any]]:
    return [
        *_view_rules(),
        rule(WRITE, "", ["serviceaccounts"]),
        rule(WRITE, IMAGE_GROUP, _STREAM_OBJECTS),
        rule(["create"], IMAGE_GROUP, ["imagestreammappings"]),
        rule(["get", "update"], IMAGE_GROUP, ["imagestreams/layers"]),
    ]


def _admin_rules() -> list[dict[str, Any]]:
    return [
        *_edit_rules(),
        rule(["create"], "", ["serviceaccounts/token"]),
        rule(WRITE, IMAGE_GROUP, [TAG_POLICIES]),
        rule([*READ, *WRITE], RBAC_GROUP, ["roles", "rolebindings"]),
        rule(["create"], AUTHORIZATION_GROUP, ["localsubjectaccessreviews"]),
    ]


def bootstrap_cluster_roles() -> list[dict[str, Any]]:
    return [
        cluster_role(
            CLUSTER_ADMIN,
            [rule(["*"], "*", ["*"]), url_rule(["*"], ["*"])],
        ),
        cluster_role("admin", _admin_rules()),
        cluster_role("edit", _edit_rules()),
        cluster_role("view", _view_rules()),
        cluster_role(DISCOVERY, [url_rule(["get"], DISCOVERY_URLS)]),
        cluster_role(MONITORING, [url_rule(["get"], MONITORING_URLS)]),
        cluster_role(
            AUTH_DELEGATOR,
            [
                rule(["create"], AUTHENTICATION_GROUP, ["tokenreviews"]),
                rule(["create"], AUTHORIZATION_GROUP, ["subjectaccessreviews"]),
            ],
        ),
        cluster_role(
            BASIC_USER,
            [
                rule(
                    ["create"],
                    AUTHORIZATION_GROUP,
                    ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(["create"], AUTHENTICATION_GROUP, ["selfsubjectreviews"]),
            ],
        ),
        *_image_roles(),
    ]


TAG_POLICY_ADMIN = "system:image-tag-policy-admin"
TAG_POLICY_VIEW = "system:image-tag-policy-view"
AGGREGATE_TO = f"{apigroups.RBAC}/aggregate-to-"


def tag_policy_aggregated_roles() -> list[dict[str, Any]]:
    """Cluster mode: the cluster's own `admin`, `edit` and `view` get what the embedded
    ones grant on ImageTagPolicies, through ClusterRole aggregation (`view` aggregates into
    `edit` and `admin` in Kubernetes). Applied with deploy/kubernetes/components/cluster-mode."""
    admin = cluster_role(TAG_POLICY_ADMIN, [rule(WRITE, IMAGE_GROUP, [TAG_POLICIES])])
    view = cluster_role(TAG_POLICY_VIEW, [rule(READ, IMAGE_GROUP, [TAG_POLICIES])])
    admin["metadata"] = {"name": TAG_POLICY_ADMIN, "labels": {AGGREGATE_TO + "admin": "true"}}
    view["metadata"] = {"name": TAG_POLICY_VIEW, "labels": {AGGREGATE_TO + "view": "true"}}
    return [admin, view]


def bootstrap_cluster_role_bindings() -> list[dict[str, Any]]:
    return [
        cluster_role_binding(CLUSTER_ADMIN, CLUSTER_ADMIN, [GROUP_MASTERS]),
        cluster_role_binding(DISCOVERY, DISCOVERY, [GROUP_AUTHENTICATED, GROUP_UNAUTHENTICATED]),
        cluster_role_binding(BASIC_USER, BASIC_USER, [GROUP_AUTHENTICATED]),
        cluster_role_binding(MONITORING, MONITORING, [MONITORING]),
    ]


def bootstrap_objects() -> list[dict[str, Any]]:
    """Every bootstrap object, roles before the bindings that reference them."""
    return [*bootstrap_cluster_roles(), *bootstrap_cluster_role_bindings()]
