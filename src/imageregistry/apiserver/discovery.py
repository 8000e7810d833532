"""Legacy discovery documents: `/api`, `/api/v1`, `/apis`, `/apis/<group>/v1`.

kubectl asks for aggregated discovery first but accepts the legacy JSON answer and then
fetches each group-version's resource list (docs/kubectl.md §0), which is the simplest shape
to keep right. Subresources are listed as `plural/sub` entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
