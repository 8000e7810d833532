"""The handler of a resource route, once authorized: decode the body, call the resource
handler for the verb, shape the reply.

`ApiEndpoints.resource` (`api_endpoints.py`) runs `ResourceVerbs.run` in a worker thread
after the dispatcher has authorized the request's action (`api_dispatch.py`). Create and
update bodies are decoded (JSON or protobuf), checked to be the right kind, and filtered by
`fieldValidation`. A PATCH body is applied to the current object. A list or get answers a
`meta.k8s.io/v1` Table when kubectl asks for one, and otherwise the object or `<Kind>List`.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from imageregistry import apigroups
from imageregistry.apiserver.api_actions import Target
from imageregistry.apiserver.codec import (
    ANY,
    Decoded,
    apply_field_validation,
    decode_body,
    decode_json,
    media_type,
)
from imageregistry.apiserver.patch import apply_patch
from imageregistry.apiserver.resource import ListOptions, RequestContext, ResourceHandler
from imageregistry.apiserver.responses import json_response
from imageregistry.apiserver.status import bad_request, conflict, method_not_allowed
from imageregistry.apiserver.tables import render_table, wants_table
from imageregistry.httpinput import parse_int
from imageregistry.observability.requestinfo import note_request_object


class ResourceVerbs:
    """One verb of one resource request, for the resource's handler."""

    def __init__(self, handler: ResourceHandler, ctx: RequestContext, request: Request) -> None:
        self.handler = handler
        self.ctx = ctx
        self.query = request.query_params
        self.accept = request.headers.get("accept", "")
        self.content_type = request.headers.get("content-type", "")

    # --- options ---------------------------------------------------------------------

    def list_options(self) -> ListOptions:
        limit = parse_int(self.query.get("limit") or "0", "limit")
        version = self.query.get("resourceVersion", "")
        if version:
            # kube parses resourceVersion as uint64; a watch from "abc" must not replay history
            parse_int(version, "resourceVersion")
        return ListOptions(
            limit=limit,
            continue_token=self.query.get("continue", ""),
            label_selector=self.query.get("labelSelector", ""),
            field_selector=self.query.get("fieldSelector", ""),
            resource_version=self.query.get("resourceVersion", ""),
        )

    def watch_renderer(self) -> Any:
        table = wants_table(self.accept)

        def render(obj: dict[str, Any], first: bool) -> dict[str, Any]:
            if not table:
                return obj
            out = self._table([obj], str((obj.get("metadata") or {}).get("resourceVersion", "")))
            if not first:
                out["columnDefinitions"] = []
            return out

        return render

    def _table(self, items: list[dict[str, Any]], rv: str, token: str = "") -> dict[str, Any]:
        return render_table(
            self.handler.columns,
            self.handler.cells,
            items,
            self.ctx.clock(),
            resource_version=rv,
            include_object=self.query.get("includeObject", "Metadata"),
            continue_token=token,
        )

    # --- bodies ----------------------------------------------------------------------

    def _decoded(self, raw: bytes) -> Decoded:
        if not raw:
            raise bad_request("the request body is empty")
        decoded = decode_body(raw, self.content_type)
        note_request_object(decoded.body)  # JSON or protobuf, as the audit log records it
        return decoded

    def _object_body(self, raw: bytes, schema: Any, kind: str, api_version: str) -> dict[str, Any]:
        decoded = self._decoded(raw)
        if not isinstance(decoded.body, dict):
            raise bad_request("the request body must be a JSON object")
        body = decoded.body
        if body.get("apiVersion") not in (None, "", api_version):
            raise bad_request(
                f"the API version in the data ({body.get('apiVersion')}) does not match "
                f"the expected API version ({api_version})"
            )
        if body.get("kind") not in (None, "", kind):
            raise bad_request(
                f"the kind in the data ({body.get('kind')}) does not match "
                f"the expected kind ({kind})"
            )
        check_meta_types(body)
        value, warnings = apply_field_validation(
            decoded, schema, self.query.get("fieldValidation", "")
        )
        self.ctx.warnings.extend(warnings)
        return dict(value)

    # --- verbs -----------------------------------------------------------------------

    def run(self, verb: str, target: Target, raw: bytes) -> Response:
        h, ns, name, info = self.handler, target.namespace, target.name, self.handler.info
        status = 200
        if target.sub and verb == "patch":
            result = self._patch_subresource(target, raw)
        elif target.sub:
            body = None
            if raw:
                sub_kind = "TokenRequest" if target.sub == "token" else info.kind
                sub_version = (
                    f"{apigroups.AUTHENTICATION}/v1" if target.sub == "token" else info.api_version
                )
                body = self._object_body(
                    raw, h.subresource_schema(target.sub), sub_kind, sub_version
                )
            status, result = h.subresource(self.ctx, _method(verb), ns, name, target.sub, body)
        elif verb == "get":
            result = h.get(self.ctx, ns, name)
            if wants_table(self.accept):
                result = self._table(
                    [result], str(result.get("metadata", {}).get("resourceVersion", ""))
                )
        elif verb == "list":
            listed = h.list(self.ctx, ns, self.list_options())
            if wants_table(self.accept):
                result = self._table(listed.items, listed.resource_version, listed.continue_token)
            else:
                meta = {"resourceVersion": listed.resource_version}
                if listed.continue_token:
                    meta["continue"] = listed.continue_token
                result = {
                    "kind": f"{info.kind}List",
                    "apiVersion": info.api_version,
                    "metadata": meta,
                    "items": listed.items,
                }
        elif verb == "create":
            result = h.create(
                self.ctx, ns, self._object_body(raw, h.schema, info.kind, info.api_version)
            )
            status = 201
        elif verb == "update":
            body = self._object_body(raw, h.schema, info.kind, info.api_version)
            check_identity(body, target, None)
            result = h.update(self.ctx, ns, name, body)
        elif verb == "patch":
            result = self._patch(target, raw)
        elif verb == "delete":
            self._delete_options(raw, target)
            result = h.delete(self.ctx, ns, name)
        else:
            raise method_not_allowed(verb, info.plural)
        return json_response(result, status, self.ctx.warnings)

    def _patch(self, target: Target, raw: bytes) -> dict[str, Any]:
        kind = media_type(self.content_type)
        patch = self._decoded(raw).body
        h = self.handler
        mode = self.query.get("fieldValidation", "")

        def apply(current: dict[str, Any]) -> dict[str, Any]:
            patched = apply_patch(kind, current, patch)
            check_meta_types(patched)
            check_identity(patched, target, current)
            encoded = json.dumps(patched).encode()
            value, warnings = apply_field_validation(decode_json(encoded), h.schema, mode)
            self.ctx.warnings.extend(warnings)
            return dict(value)

        return h.patch(self.ctx, target.namespace, target.name, apply)

    def _patch_subresource(self, target: Target, raw: bytes) -> dict[str, Any]:
        """A subresource PATCH is its GET, the patch, then its PUT (e.g. `imagestreams/status`)."""
        h, ns, name, sub = self.handler, target.namespace, target.name, target.sub
        _, current = h.subresource(self.ctx, "GET", ns, name, sub, None)
        patched = apply_patch(media_type(self.content_type), current, self._decoded(raw).body)
        check_meta_types(patched)
        value, warnings = apply_field_validation(
            decode_json(json.dumps(patched).encode()),
            h.subresource_schema(sub),
            self.query.get("fieldValidation", ""),
        )
        self.ctx.warnings.extend(warnings)
        return h.subresource(self.ctx, "PUT", ns, name, sub, dict(value))[1]

    def _delete_options(self, raw: bytes, target: Target) -> None:
        """Apply a DeleteOptions body: `dryRun` and `preconditions` (uid, resourceVersion),
        which kube enforces with a 409 rather than deleting a different or newer object."""
        if not raw.strip():
            return
        options = decode_body(raw, self.content_type or "application/json").body
        if not isinstance(options, dict):
            raise bad_request("DeleteOptions must be a JSON object")
        dry_run = options.get("dryRun") or []
        preconditions = options.get("preconditions") or {}
        if not isinstance(dry_run, list) or not isinstance(preconditions, dict):
            raise bad_request("DeleteOptions.dryRun must be a list, preconditions an object")
        if "All" in dry_run:
            object.__setattr__(self.ctx, "dry_run", True)
        wanted = {k: preconditions.get(k) for k in ("uid", "resourceVersion")}
        if not any(wanted.values()):
            return
        meta = self.handler.get(self.ctx, target.namespace, target.name).get("metadata") or {}
        for key, value in wanted.items():
            if value and str(value) != str(meta.get(key)):
                info = self.handler.info
                raise conflict(
                    info.plural,
                    info.group,
                    target.name,
                    f"Precondition failed: {key} in precondition: {value}, "
                    f"{key} in object meta: {meta.get(key)}",
                )


_META_STRINGS = ("name", "generateName", "namespace", "uid", "resourceVersion")


def check_meta_types(body: Any) -> None:
    """400 for an object whose `metadata` has the wrong JSON types, as kube-apiserver's decoder
    answers; handlers below read `metadata.name` etc. as strings and maps of strings."""
    if not isinstance(body, dict):
        raise bad_request("the object must be a JSON object")
    meta = body.get("metadata")
    if meta is None:
        return
    if not isinstance(meta, dict):
        raise bad_request("the body of the request could not be decoded: metadata is not an object")
    for key in _META_STRINGS:
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad_request(
                f"the body of the request could not be decoded: metadata.{key} must be a string"
            )
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is not None and not (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            raise bad_request(
                f"the body of the request could not be decoded: metadata.{key} must map "
                "strings to strings"
            )


def check_identity(body: dict[str, Any], target: Target, current: dict[str, Any] | None) -> None:
    """An update or patch may not rename, move or swap the object it addresses: kube answers
    400 for a name or namespace other than the URL's and 409 for a uid other than the stored
    object's (it is a precondition), where some handlers would silently ignore them."""
    meta = body.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace")
    if name not in (None, "", target.name):
        raise bad_request(
            f"the name of the object ({name}) does not match the name on the URL ({target.name})"
        )
    if target.handler.info.namespaced and namespace not in (None, "", target.namespace):
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    uid = meta.get("uid")
    old_uid = ((current or {}).get("metadata") or {}).get("uid")
    if uid and old_uid and uid != old_uid:
        info = target.handler.info
        raise conflict(
            info.plural,
            info.group,
            target.name,
            f"Precondition failed: UID in precondition: {old_uid}, UID in object meta: {uid}",
        )


def _method(verb: str) -> str:
    return {
        "get": "GET",
        "create": "POST",
        "update": "PUT",
        "patch": "PATCH",
        "delete": "DELETE",
    }.get(verb, verb)


__all__ = ["ANY", "ResourceVerbs", "Target"]
