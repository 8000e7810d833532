"""Discovery documents: `/api`, `/api/v1`, `/apis`, `/apis/<group>/v1`, legacy and aggregated.

kubectl asks for aggregated discovery (`apidiscovery.k8s.io/v2`) first: when its Accept header
offers it, `/api` and `/apis` answer one APIGroupDiscoveryList with every resource and subresource,
under exactly the content type kubectl checks (docs/kubectl.md#cross-cutting-facts), so discovery
takes two requests. Other clients get the legacy JSON documents and then fetch each group-version's
resource list, where subresources are listed as `plural/sub` entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imageregistry import apigroups
from imageregistry.apiserver.resource import ResourceHandler

SUBRESOURCE_VERBS = {"token": ["create"], "layers": ["get"], "status": ["get", "patch", "update"]}


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def groups(handlers: Sequence[ResourceHandler]) -> list[str]:
    return sorted({h.info.group for h in handlers if h.info.group})


def api_group_list(handlers: Sequence[ResourceHandler]) -> dict[str, Any]:
    out = []
    for group in groups(handlers):
        version = {"groupVersion": f"{group}/v1", "version": "v1"}
        out.append({"name": group, "versions": [version], "preferredVersion": version})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": out}


def api_group(group: str) -> dict[str, Any]:
    version = {"groupVersion": f"{group}/v1", "version": "v1"}
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [version],
        "preferredVersion": version,
    }


def resource_list(group: str, handlers: Sequence[ResourceHandler]) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for h in handlers:
        info = h.info
        if info.group != group:
            continue
        entry: dict[str, Any] = {
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": sorted(info.verbs),
        }
        if info.short_names:
            entry["shortNames"] = list(info.short_names)
        if info.categories:
            entry["categories"] = list(info.categories)
        resources.append(entry)
        for sub in h.subresources:
            kind = "TokenRequest" if sub == "token" else info.kind
            resources.append(
                {
                    "name": f"{info.plural}/{sub}",
                    "singularName": "",
                    "namespaced": info.namespaced,
                    "kind": kind,
                    "verbs": SUBRESOURCE_VERBS.get(sub, ["get"]),
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/v1" if group else "v1",
        "resources": resources,
    }


# --- aggregated discovery (apidiscovery.k8s.io/v2) ----------------------------------------

AGGREGATED_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def wants_aggregated(accept: str) -> bool:
    """True when the Accept header offers the v2 APIGroupDiscoveryList (kubectl 1.30+)."""
    for offer in accept.split(","):
        parts = [p.strip() for p in offer.split(";")]
        params = dict(p.partition("=")[::2] for p in parts[1:])
        if (
            parts[0] == "application/json"
            and params.get("g") == "apidiscovery.k8s.io"
            and params.get("v") == "v2"
            and params.get("as") == "APIGroupDiscoveryList"
        ):
            return True
    return False


def _aggregated_resource(h: ResourceHandler) -> dict[str, Any]:
    info = h.info
    kind = {"group": info.group, "version": info.version, "kind": info.kind}
    entry: dict[str, Any] = {
        "resource": info.plural,
        "responseKind": kind,
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular,
        "verbs": sorted(info.verbs),
    }
    if info.short_names:
        entry["shortNames"] = list(info.short_names)
    if info.categories:
        entry["categories"] = list(info.categories)
    subs = []
    for sub in h.subresources:
        sub_kind = (
            {"group": apigroups.AUTHENTICATION, "version": "v1", "kind": "TokenRequest"}
            if sub == "token"
            else kind
        )
        subs.append(
            {
                "subresource": sub,
                "responseKind": sub_kind,
                "verbs": SUBRESOURCE_VERBS.get(sub, ["get"]),
            }
        )
    if subs:
        entry["subresources"] = subs
    return entry


def aggregated(core: bool, handlers: Sequence[ResourceHandler]) -> dict[str, Any]:
    """`/api` (core) or `/apis` (every named group) as one APIGroupDiscoveryList."""
    names = [""] if core else groups(handlers)
    items = []
    for group in names:
        resources = [_aggregated_resource(h) for h in handlers if h.info.group == group]
        items.append(
            {
                "metadata": {"name": group} if group else {},
                "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
