"""The list of API resources this server serves, wired to the shared services."""

from __future__ import annotations

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
from imageregistry.services import Services


def build_handlers(services: Services) -> list[ResourceHandler]:
    if services.settings.auth_mode == "kubernetes":
        return cluster_mode_handlers(services)
    db = services.db
    resolver = build_resolver(db)
    handlers: list[ResourceHandler] = [
        Namespaces(db, image_namespace_cleanups()),
        ServiceAccounts(db, services.authn.signer, DEFAULT_AUDIENCE),
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
        TokenReviews(services.authn),
        *image_handlers(services),
        *prune_handlers(services),
    ]
    ensure_namespace(db, "default", services.clock)
    return handlers


def cluster_mode_handlers(services: Services) -> list[ResourceHandler]:
    """Cluster mode serves the image API only (plus `kubectl auth whoami`): namespaces,
    service accounts, their tokens, RBAC objects and the reviews are the cluster's, and
    a local copy of them would decide nothing."""
    return [SelfSubjectReviews(), *image_handlers(services), *prune_handlers(services)]


def image_namespace_cleanups() -> tuple[NamespaceCleanup, ...]:
    return (namespace_cleanup,)


def image_handlers(services: Services) -> list[ResourceHandler]:
    db, host = services.db, services.settings.registry_host
    return [
        Images(db, host),
        ImageStreams(db, host),
        ImageStreamTags(db, host),
        ImageStreamImages(db, host),
        ImageStreamMappings(db, host),
        ImageSignatures(db),
        ImageTagPolicies(db),
    ]


def prune_handlers(services: Services) -> list[ResourceHandler]:
    """The operation resources sharing one pruner: prune, GC, verification, runs, schedule."""
    pruner = services.pruner
    return [
        ImagePrunes(pruner),
        RegistryGCs(pruner),
        RegistryVerifications(pruner),
        ImagePruneRuns(services.db),
        ImagePruners(services.db),
    ]
