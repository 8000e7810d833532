"""The list of API resources this server serves, wired to the API's collaborators."""

from __future__ import annotations

from imageregistry.apiserver.collaborators import ApiCollaborators
from imageregistry.apiserver.imagepruner import ImagePruners
from imageregistry.apiserver.imagetagpolicy import ImageTagPolicies
from imageregistry.apiserver.prune import ImagePruneRuns, ImagePrunes, RegistryGCs
from imageregistry.apiserver.resource import ResourceHandler
from imageregistry.apiserver.resources.image_views import (
    ImageStreamImages,
    ImageStreamMappings,
    ImageStreamTags,
)
from imageregistry.apiserver.resources.images import Images, ImageStreams, namespace_cleanup
from imageregistry.apiserver.resources.imagesignatures import ImageSignatures
from imageregistry.apiserver.resources.namespaces import (
    NamespaceCleanup,
    Namespaces,
    ensure_namespace,
)
from imageregistry.apiserver.resources.quotas import LimitRanges, ResourceQuotas
from imageregistry.apiserver.resources.rbac import (
    ClusterRoleBindings,
    ClusterRoles,
    RoleBindings,
    Roles,
)
from imageregistry.apiserver.resources.reviews import (
    LocalSubjectAccessReviews,
    SelfSubjectAccessReviews,
    SelfSubjectReviews,
    SelfSubjectRulesReviews,
    SubjectAccessReviews,
    TokenReviews,
)
from imageregistry.apiserver.resources.serviceaccounts import ServiceAccounts
from imageregistry.apiserver.verify import RegistryVerifications
from imageregistry.auth.rbac_store import build_resolver
from imageregistry.auth.tokens import DEFAULT_AUDIENCE


def build_handlers(api: ApiCollaborators) -> list[ResourceHandler]:
    if api.cluster_mode:
        return cluster_mode_handlers(api)
    db = api.db
    resolver = build_resolver(db)
    handlers: list[ResourceHandler] = [
        Namespaces(db, image_namespace_cleanups()),
        ServiceAccounts(db, api.authn.signer, DEFAULT_AUDIENCE),
        ResourceQuotas(db),
        LimitRanges(db),
        Roles(db, resolver),
        ClusterRoles(db, resolver),
        RoleBindings(db, resolver),
        ClusterRoleBindings(db, resolver),
        SelfSubjectAccessReviews(resolver),
        SubjectAccessReviews(resolver),
        LocalSubjectAccessReviews(resolver),
        SelfSubjectRulesReviews(resolver),
        SelfSubjectReviews(),
        TokenReviews(api.authn),
        *image_handlers(api),
        *prune_handlers(api),
    ]
    ensure_namespace(db, "default", api.clock)
    return handlers


def cluster_mode_handlers(api: ApiCollaborators) -> list[ResourceHandler]:
    """Cluster mode serves the image API only (plus `kubectl auth whoami`): namespaces,
    service accounts, their tokens, RBAC objects and the reviews are the cluster's, and
    a local copy of them would decide nothing."""
    return [SelfSubjectReviews(), *image_handlers(api), *prune_handlers(api)]


def image_namespace_cleanups() -> tuple[NamespaceCleanup, ...]:
    return (namespace_cleanup,)


def image_handlers(api: ApiCollaborators) -> list[ResourceHandler]:
    db, host = api.db, api.registry_host
    return [
        Images(db, host),
        ImageStreams(db, host),
        ImageStreamTags(db, host),
        ImageStreamImages(db, host),
        ImageStreamMappings(db, host),
        ImageSignatures(db),
        ImageTagPolicies(db),
    ]


def prune_handlers(api: ApiCollaborators) -> list[ResourceHandler]:
    """The operation resources sharing one pruner: prune, GC, verification, runs, schedule."""
    pruner = api.pruner
    return [
        ImagePrunes(pruner),
        RegistryGCs(pruner),
        RegistryVerifications(pruner),
        ImagePruneRuns(api.db),
        ImagePruners(api.db),
    ]
