from __future__ import annotations

from imageregistry.auth.bootstrap_roles import bootstrap_objects
from imageregistry.auth.identity import Attributes, UserInfo, authenticated
from imageregistry.auth.resolver import RuleResolver

from .fake_rbac import InMemoryRbac, role_binding, user

G = "image.alauda.io"


def test_objects_are_well_formed_and_marked_for_reconciliation() -> None:
    objects = bootstrap_objects()
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names))
    for o in objects:
        assert o["apiVersion"] == "rbac.authorization.k8s.io/v1"
        assert o["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
        assert o["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] == "true"
    roles = {n for k, n in names if k == "ClusterRole"}
    assert {
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:discovery",
        "system:basic-user",
        "system:image-puller",
        "system:image-pusher",
        "system:image-deleter",
        "system:image-pruner",
        "system:image-signer",
    } <= roles
    for o in objects:
        if o["kind"] == "ClusterRoleBinding":
            assert o["roleRef"]["name"] in roles


def grants(role: str, verb: str, resource: str, sub: str = "", group: str = G) -> bool:
    store = InMemoryRbac([role_binding("b", "ns", role, user("u"))])
    who: UserInfo = authenticated("u")
    attrs = Attributes.for_resource(
        who, verb, group, resource, subresource=sub, name="n", namespace="ns"
    )
    return RuleResolver(store, store).authorize(attrs).allowed


def test_image_roles_per_behaviour_table() -> None:
    assert grants("system:image-puller", "get", "imagestreams", "layers")
    assert not grants("system:image-puller", "update", "imagestreams", "layers")
    assert grants("system:image-pusher", "get", "imagestreams", "layers")
    assert grants("system:image-pusher", "update", "imagestreams", "layers")
    assert grants("system:image-deleter", "delete", "imagestreamtags")
    assert grants("system:image-deleter", "delete", "imagestreamimages")
    assert not grants("system:image-deleter", "update", "imagestreams", "layers")
    assert grants("system:image-pruner", "delete", "images")
    assert grants("system:image-pruner", "update", "imagestreams", "status")
    assert grants("system:image-pruner", "create", "imageprunes")
    assert grants("system:image-pruner", "create", "registrygcs")
    assert not grants("system:image-pruner", "delete", "imagestreams")
    assert grants("system:image-signer", "create", "imagesignatures")
    assert not grants("system:image-signer", "update", "imagestreams", "layers")


def test_admin_edit_view() -> None:
    assert grants("view", "list", "imagestreams")
    assert not grants("view", "delete", "imagestreams")
    assert not grants("view", "list", "rolebindings", group="rbac.authorization.k8s.io")
    assert grants("edit", "delete", "imagestreamtags")
    assert grants("edit", "update", "imagestreams", "layers")
    assert not grants("edit", "create", "rolebindings", group="rbac.authorization.k8s.io")
    assert grants("admin", "create", "rolebindings", group="rbac.authorization.k8s.io")
    assert grants("admin", "create", "serviceaccounts", "token", group="")
    assert not grants("admin", "impersonate", "users", group="")
    assert grants("cluster-admin", "impersonate", "users", group="")
