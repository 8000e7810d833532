"""The one authorization seam every request passes through.

Registry requests are translated into Kubernetes access reviews on `image.alauda.io`
(docs/behaviour.md#access-control) by `registry_attributes`, then decided by the same `Authorizer`
that decides API requests. `MastersOnlyAuthorizer` is the deny-by-default decision used when no RBAC
data is available (and in unit tests); `server.py` wires the RBAC authorizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from imageregistry import apigroups
from imageregistry.auth.identity import GROUP_MASTERS, Attributes, UserInfo

IMAGE_GROUP = apigroups.IMAGE


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""


class Authorizer(Protocol):
    def authorize(self, attrs: Attributes) -> Verdict: ...


class RegistryAction(StrEnum):
    PULL = "pull"
    PUSH = "push"
    DELETE_TAG = "delete-tag"
    DELETE_DIGEST = "delete-digest"
    CATALOG = "catalog"
    SIGN = "sign"


# registry request -> (verb, resource, subresource);
# docs/behaviour.md#registry-requests-and-their-access-reviews.
_REVIEWS: dict[RegistryAction, tuple[str, str, str]] = {
    RegistryAction.PULL: ("get", "imagestreams", "layers"),
    RegistryAction.PUSH: ("update", "imagestreams", "layers"),
    RegistryAction.DELETE_TAG: ("delete", "imagestreamtags", ""),
    RegistryAction.DELETE_DIGEST: ("delete", "imagestreamimages", ""),
    RegistryAction.CATALOG: ("list", "imagestreams", ""),
    RegistryAction.SIGN: ("create", "imagesignatures", ""),
}


def registry_attributes(
    user: UserInfo, action: RegistryAction, namespace: str = "", stream: str = ""
) -> Attributes:
    verb, resource, subresource = _REVIEWS[action]
    if action is RegistryAction.CATALOG:
        namespace, stream = "", ""
    if action is RegistryAction.SIGN:
        stream = ""
    return Attributes.for_resource(
        user,
        verb,
        IMAGE_GROUP,
        resource,
        subresource=subresource,
        name=stream,
        namespace=namespace,
    )


class MastersOnlyAuthorizer:
    """Allows `system:masters`, denies everyone else."""

    def authorize(self, attrs: Attributes) -> Verdict:
        if attrs.user.in_group(GROUP_MASTERS):
            return Verdict(True, "member of system:masters")
        return Verdict(False, "")
