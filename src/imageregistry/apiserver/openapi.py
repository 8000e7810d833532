"""Minimal OpenAPI v3 so that `kubectl apply -f` and `kubectl create -f` validate server-side.

kubectl downloads `/openapi/v3`, then the group-version document, and only needs to find, for each
kind, a path with a `patch` operation tagged `x-kubernetes-group-version-kind` that takes a
`fieldValidation` parameter (docs/kubectl.md#resource-commands). It then skips client-side
validation and sends `fieldValidation=Strict`, and the server's own strict decoding does the
checking.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from imageregistry.apiserver.resource import ResourceHandler


def _gv_path(group: str) -> str:
    return f"apis/{group}/v1" if group else "api/v1"


def group_document(group: str, handlers: Sequence[ResourceHandler]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for h in handlers:
        info = h.info
        if info.group != group:
            continue
        scope = "/namespaces/{namespace}" if info.namespaced else ""
        operation = {
            "operationId": f"patch{info.kind}",
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": group, "version": "v1", "kind": info.kind},
            "parameters": [
                {
                    "name": "fieldValidation",
                    "in": "query",
                    "schema": {"type": "string", "uniqueItems": True},
                },
                {
                    "name": "dryRun",
                    "in": "query",
                    "schema": {"type": "string", "uniqueItems": True},
                },
                {
                    "name": "fieldManager",
                    "in": "query",
                    "schema": {"type": "string", "uniqueItems": True},
                },
            ],
            "responses": {"200": {"description": "OK"}},
        }
        paths[f"/{_gv_path(group)}{scope}/{info.plural}/{{name}}"] = {"patch": operation}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.4"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _hash(document: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest()[:64].upper()


def index(handlers: Sequence[ResourceHandler]) -> dict[str, Any]:
    groups = sorted({h.info.group for h in handlers})
    paths = {}
    for group in groups:
        doc = group_document(group, handlers)
        paths[_gv_path(group)] = {
            "serverRelativeURL": f"/openapi/v3/{_gv_path(group)}?hash={_hash(doc)}"
        }
    return {"paths": paths}


def document_for(path: str, handlers: Sequence[ResourceHandler]) -> dict[str, Any] | None:
    """The document for `api/v1` or `apis/<group>/v1`, or None."""
    path = path.strip("/")
    if path == "api/v1":
        return group_document("", handlers)
    parts = path.split("/")
    if (
        len(parts) == 3
        and parts[0] == "apis"
        and parts[2] == "v1"
        and any(h.info.group == parts[1] for h in handlers)
    ):
        return group_document(parts[1], handlers)
    return None
