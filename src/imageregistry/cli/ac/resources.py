"""The resource kinds `ac get|describe|delete` know, and how their names and paths are spelled.

Names resolve like kubectl's: plural, singular, short name (`is`, `istag`, `isimage`, `ns`,
`sa`) or the fully qualified `plural.group` form (`images.image.alauda.io`).
"""

from __future__ import annotations

from dataclasses import dataclass

from imageregistry import apigroups
from imageregistry.cli.ac.errors import CliError

IMAGE_GROUP = apigroups.IMAGE
RBAC_GROUP = apigroups.RBAC


@dataclass(frozen=True)
class ResourceKind:
    plural: str
    kind: str
    group: str
    namespaced: bool
    short_names: tuple[str, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """`imagestreamtag.image.alauda.io`, or `namespace` for the core group."""
        return f"{self.singular}.{self.group}" if self.group else self.singular

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    def collection_path(self, namespace: str | None) -> str:
        base = f"/apis/{self.group}/v1" if self.group else "/api/v1"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    def object_path(self, namespace: str | None, name: str) -> str:
        return f"{self.collection_path(namespace)}/{name}"


KINDS = (
    ResourceKind("images", "Image", IMAGE_GROUP, False),
    ResourceKind("imagestreams", "ImageStream", IMAGE_GROUP, True, ("is",)),
    ResourceKind("imagestreamtags", "ImageStreamTag", IMAGE_GROUP, True, ("istag",)),
    ResourceKind("imagestreamimages", "ImageStreamImage", IMAGE_GROUP, True, ("isimage",)),
    ResourceKind("namespaces", "Namespace", "", False, ("ns",)),
    ResourceKind("serviceaccounts", "ServiceAccount", "", True, ("sa",)),
    ResourceKind("rolebindings", "RoleBinding", RBAC_GROUP, True),
    ResourceKind("resourcequotas", "ResourceQuota", "", True, ("quota",)),
    ResourceKind("limitranges", "LimitRange", "", True, ("limits",)),
)


def resolve_kind(text: str) -> ResourceKind:
    wanted = text.lower()
    for kind in KINDS:
        names = {kind.plural, kind.singular, *kind.short_names}
        if kind.group:
            names |= {f"{n}.{kind.group}" for n in (kind.plural, kind.singular)}
            names |= {f"{n}.v1.{kind.group}" for n in (kind.plural, kind.singular)}
        if wanted in names:
            return kind
    known = ", ".join(k.plural for k in KINDS)
    raise CliError(f'the server doesn\'t have a resource type "{text}" — known types: {known}')
