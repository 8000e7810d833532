"""Declarative field tables for the Kubernetes protobuf messages the API server accepts.

This is the one place that records, per message, which protobuf field number carries which
Kubernetes JSON field name and type; `protobuf.py` turns it into descriptors and walks decoded
messages with it. Numbers come from `generated.proto` in k8s.io/api and k8s.io/apimachinery
v0.32 (the ones kubectl 1.32 was observed to send are marked V in docs/kubectl.md#protobuf). Type
notation: a scalar proto type (`string`, `bool`, `int32`, `int64`, `bytes`), a message name,
`[T]` for a repeated field and `{T}` for `map<string, T>`. Three messages have a special JSON
form: `Time` becomes an RFC 3339 string, `Quantity` its string and `ExtraValue` a bare list
of strings.
"""

from __future__ import annotations

from typing import Final

from imageregistry import apigroups

FieldSpec = tuple[int, str, str]

# `runtime.Unknown`, the envelope after the `k8s\0` magic (apimachinery runtime/generated.proto).
ENVELOPE: Final = "Unknown"

# Messages whose JSON form is not an object (see module docstring).
TIME: Final = "Time"
QUANTITY: Final = "Quantity"
LIST_WRAPPERS: Final[dict[str, str]] = {"ExtraValue": "items"}

_OBJECT_META: tuple[FieldSpec, ...] = (
    (1, "name", "string"),
    (2, "generateName", "string"),
    (3, "namespace", "string"),
    (4, "selfLink", "string"),
    (5, "uid", "string"),
    (6, "resourceVersion", "string"),
    (7, "generation", "int64"),
    (8, "creationTimestamp", "Time"),
    (9, "deletionTimestamp", "Time"),
    (10, "deletionGracePeriodSeconds", "int64"),
    (11, "labels", "{string}"),
    (12, "annotations", "{string}"),
    (13, "ownerReferences", "[OwnerReference]"),
    (14, "finalizers", "[string]"),
    # 17 managedFields is deliberately absent: clients never send it on create and the server
    # owns it, so it is skipped like any unknown field.
)

_SAR_STATUS: tuple[FieldSpec, ...] = (
    (1, "allowed", "bool"),
    (2, "reason", "string"),
    (3, "evaluationError", "string"),
    (4, "denied", "bool"),
)

MESSAGES: Final[dict[str, tuple[FieldSpec, ...]]] = {
    ENVELOPE: (
        (1, "typeMeta", "TypeMeta"),
        (2, "raw", "bytes"),
        (3, "contentEncoding", "string"),
        (4, "contentType", "string"),
    ),
    "TypeMeta": ((1, "apiVersion", "string"), (2, "kind", "string")),
    # --- meta.k8s.io/v1
    TIME: ((1, "seconds", "int64"), (2, "nanos", "int32")),
    "ObjectMeta": _OBJECT_META,
    "OwnerReference": (
        (1, "kind", "string"),
        (3, "name", "string"),
        (4, "uid", "string"),
        (5, "apiVersion", "string"),
        (6, "controller", "bool"),
        (7, "blockOwnerDeletion", "bool"),
    ),
    "LabelSelector": (
        (1, "matchLabels", "{string}"),
        (2, "matchExpressions", "[SelectorRequirement]"),
    ),
    # LabelSelectorRequirement and FieldSelectorRequirement share this shape.
    "SelectorRequirement": (
        (1, "key", "string"),
        (2, "operator", "string"),
        (3, "values", "[string]"),
    ),
    "DeleteOptions": (
        (1, "gracePeriodSeconds", "int64"),
        (2, "preconditions", "Preconditions"),
        (3, "orphanDependents", "bool"),
        (4, "propagationPolicy", "string"),
        (5, "dryRun", "[string]"),
        (6, "ignoreStoreReadErrorWithClusterBreakingPotential", "bool"),
    ),
    "Preconditions": ((1, "uid", "string"), (2, "resourceVersion", "string")),
    # --- core v1
    "Namespace": (
        (1, "metadata", "ObjectMeta"),
        (2, "spec", "NamespaceSpec"),
        (3, "status", "NamespaceStatus"),
    ),
    "NamespaceSpec": ((1, "finalizers", "[string]"),),
    "NamespaceStatus": ((1, "phase", "string"), (2, "conditions", "[NamespaceCondition]")),
    "NamespaceCondition": (
        (1, "type", "string"),
        (2, "status", "string"),
        (4, "lastTransitionTime", "Time"),
        (5, "reason", "string"),
        (6, "message", "string"),
    ),
    "ServiceAccount": (
        (1, "metadata", "ObjectMeta"),
        (2, "secrets", "[ObjectReference]"),
        (3, "imagePullSecrets", "[LocalObjectReference]"),
        (4, "automountServiceAccountToken", "bool"),
    ),
    "ObjectReference": (
        (1, "kind", "string"),
        (2, "namespace", "string"),
        (3, "name", "string"),
        (4, "uid", "string"),
        (5, "apiVersion", "string"),
        (6, "resourceVersion", "string"),
        (7, "fieldPath", "string"),
    ),
    "LocalObjectReference": ((1, "name", "string"),),
    "ResourceQuota": (
        (1, "metadata", "ObjectMeta"),
        (2, "spec", "ResourceQuotaSpec"),
        (3, "status", "ResourceQuotaStatus"),
    ),
    "ResourceQuotaSpec": (
        (1, "hard", "{Quantity}"),
        (2, "scopes", "[string]"),
        (3, "scopeSelector", "ScopeSelector"),
    ),
    "ResourceQuotaStatus": ((1, "hard", "{Quantity}"), (2, "used", "{Quantity}")),
    "ScopeSelector": ((1, "matchExpressions", "[ScopedResourceSelectorRequirement]"),),
    "ScopedResourceSelectorRequirement": (
        (1, "scopeName", "string"),
        (2, "operator", "string"),
        (3, "values", "[string]"),
    ),
    "LimitRange": ((1, "metadata", "ObjectMeta"), (2, "spec", "LimitRangeSpec")),
    "LimitRangeSpec": ((1, "limits", "[LimitRangeItem]"),),
    "LimitRangeItem": (
        (1, "type", "string"),
        (2, "max", "{Quantity}"),
        (3, "min", "{Quantity}"),
        (4, "default", "{Quantity}"),
        (5, "defaultRequest", "{Quantity}"),
        (6, "maxLimitRequestRatio", "{Quantity}"),
    ),
    # resource.Quantity (apimachinery api/resource): its JSON form is the string itself.
    QUANTITY: ((1, "string", "string"),),
    # --- rbac.authorization.k8s.io/v1
    "Role": ((1, "metadata", "ObjectMeta"), (2, "rules", "[PolicyRule]")),
    "ClusterRole": (
        (1, "metadata", "ObjectMeta"),
        (2, "rules", "[PolicyRule]"),
        (3, "aggregationRule", "AggregationRule"),
    ),
    "PolicyRule": (
        (1, "verbs", "[string]"),
        (2, "apiGroups", "[string]"),
        (3, "resources", "[string]"),
        (4, "resourceNames", "[string]"),
        (5, "nonResourceURLs", "[string]"),
    ),
    "AggregationRule": ((1, "clusterRoleSelectors", "[LabelSelector]"),),
    "RoleBinding": (
        (1, "metadata", "ObjectMeta"),
        (2, "subjects", "[Subject]"),
        (3, "roleRef", "RoleRef"),
    ),
    "Subject": (
        (1, "kind", "string"),
        (2, "apiGroup", "string"),
        (3, "name", "string"),
        (4, "namespace", "string"),
    ),
    "RoleRef": ((1, "apiGroup", "string"), (2, "kind", "string"), (3, "name", "string")),
    # --- authorization.k8s.io/v1
    "SelfSubjectAccessReview": (
        (1, "metadata", "ObjectMeta"),
        (2, "spec", "SelfSubjectAccessReviewSpec"),
        (3, "status", "SubjectAccessReviewStatus"),
    ),
    "SelfSubjectAccessReviewSpec": (
        (1, "resourceAttributes", "ResourceAttributes"),
        (2, "nonResourceAttributes", "NonResourceAttributes"),
    ),
    "SubjectAccessReview": (
        (1, "metadata", "ObjectMeta"),
        (2, "spec", "SubjectAccessReviewSpec"),
        (3, "status", "SubjectAccessReviewStatus"),
    ),
    "SubjectAccessReviewSpec": (
        (1, "resourceAttributes", "ResourceAttributes"),
        (2, "nonResourceAttributes", "NonResourceAttributes"),
        (3, "user", "string"),
        (4, "groups", "[string]"),
        (5, "extra", "{ExtraValue}"),
        (6, "uid", "string"),
    ),
    "SubjectAccessReviewStatus": _SAR_STATUS,
    "ResourceAttributes": (
        (1, "namespace", "string"),
        (2, "verb", "string"),
        (3, "group", "string"),
        (4, "version", "string"),
        (5, "resource", "string"),
        (6, "subresource", "string"),
        (7, "name", "string"),
        (8, "fieldSelector", "SelectorAttributes"),
        (9, "labelSelector", "SelectorAttributes"),
    ),
    # FieldSelectorAttributes and LabelSelectorAttributes share this shape.
    "SelectorAttributes": (
        (1, "rawSelector", "string"),
        (2, "requirements", "[SelectorRequirement]"),
    ),
    "NonResourceAttributes": ((1, "path", "string"), (2, "verb", "string")),
    "SelfSubjectRulesReview": (
        (1, "metadata", "ObjectMeta"),
        (2, "spec", "SelfSubjectRulesReviewSpec"),
        (3, "status", "SubjectRulesReviewStatus"),
    ),
    "SelfSubjectRulesReviewSpec": ((1, "namespace", "string"),),
    "SubjectRulesReviewStatus": (
        (1, "resourceRules", "[ResourceRule]"),
        (2, "nonResourceRules", "[NonResourceRule]"),
        (3, "incomplete", "bool"),
        (4, "evaluationError", "string"),
    ),
    "ResourceRule": (
        (1, "verbs", "[string]"),
        (2, "apiGroups", "[string]"),
        (3, "resources", "[string]"),
        (4, "resourceNames", "[string]"),
    ),
    "NonResourceRule": ((1, "verbs", "[string]"), (2, "nonResourceURLs", "[string]")),
    "ExtraValue": ((1, "items", "[string]"),),
    # --- authentication.k8s.io/v1
    "SelfSubjectReview": ((1, "metadata", "ObjectMeta"), (2, "status", "SelfSubjectReviewStatus")),
    "SelfSubjectReviewStatus": ((1, "userInfo", "UserInfo"),),
    "UserInfo": (
        (1, "username", "string"),
        (2, "uid", "string"),
        (3, "groups", "[string]"),
        (4, "extra", "{ExtraValue}"),
    ),
    "TokenReview": (
        (1, "metadata", "ObjectMeta"),
        (2, "spec", "TokenReviewSpec"),
        (3, "status", "TokenReviewStatus"),
    ),
    "TokenReviewSpec": ((1, "token", "string"), (2, "audiences", "[string]")),
    "TokenReviewStatus": (
        (1, "authenticated", "bool"),
        (2, "user", "UserInfo"),
        (3, "error", "string"),
        (4, "audiences", "[string]"),
    ),
    "TokenRequest": (
        (1, "metadata", "ObjectMeta"),
        (2, "spec", "TokenRequestSpec"),
        (3, "status", "TokenRequestStatus"),
    ),
    "TokenRequestSpec": (
        (1, "audiences", "[string]"),
        (3, "boundObjectRef", "BoundObjectReference"),
        (4, "expirationSeconds", "int64"),
    ),
    "BoundObjectReference": (
        (1, "kind", "string"),
        (2, "apiVersion", "string"),
        (3, "name", "string"),
        (4, "uid", "string"),
    ),
    "TokenRequestStatus": ((1, "token", "string"), (2, "expirationTimestamp", "Time")),
}

_RBAC = f"{apigroups.RBAC}/v1"
_AUTHZ = f"{apigroups.AUTHORIZATION}/v1"
_AUTHN = f"{apigroups.AUTHENTICATION}/v1"

# (apiVersion, kind) from the envelope's typeMeta → top-level message in MESSAGES.
KINDS: Final[dict[tuple[str, str], str]] = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "ServiceAccount"): "ServiceAccount",
    ("v1", "ResourceQuota"): "ResourceQuota",
    ("v1", "LimitRange"): "LimitRange",
    (_RBAC, "Role"): "Role",
    (_RBAC, "ClusterRole"): "ClusterRole",
    (_RBAC, "RoleBinding"): "RoleBinding",
    (_RBAC, "ClusterRoleBinding"): "RoleBinding",
    (_AUTHZ, "SelfSubjectAccessReview"): "SelfSubjectAccessReview",
    (_AUTHZ, "SubjectAccessReview"): "SubjectAccessReview",
    (_AUTHZ, "LocalSubjectAccessReview"): "SubjectAccessReview",
    (_AUTHZ, "SelfSubjectRulesReview"): "SelfSubjectRulesReview",
    (_AUTHN, "SelfSubjectReview"): "SelfSubjectReview",
    (_AUTHN, "TokenReview"): "TokenReview",
    (_AUTHN, "TokenRequest"): "TokenRequest",
    ("meta.k8s.io/v1", "DeleteOptions"): "DeleteOptions",
    ("v1", "DeleteOptions"): "DeleteOptions",
}
