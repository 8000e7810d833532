"""`registryverifications` (create-only): one page of `ac adm registry verify`.

Creating a `RegistryVerification` re-hashes up to `spec.limit` stored blobs after
`spec.continue` and answers what it found in `status`, with `status.continue` naming where
the next page starts ("" when done); `?dryRun=All` only reports, a real create also marks
damaged blobs `corrupt` (`prune.verify`). Nothing is stored for the object itself; the
client drives the pages, so an interrupted run resumes from the last token it printed.
The dispatcher (`api_dispatch.py`) has already authorized `create` on the resource
(system:image-pruner).
"""

from __future__ import annotations

from typing import Any

from imageregistry.apiserver.codec import ANY, object_schema
from imageregistry.apiserver.prune import _check_types, _result_object, run_async
from imageregistry.apiserver.resource import RequestContext, ResourceHandler, ResourceInfo
from imageregistry.apiserver.status import bad_request
from imageregistry.auth.authorizer import IMAGE_GROUP
from imageregistry.prune.service import Pruner
from imageregistry.prune.verify import DEFAULT_PAGE, MAX_PAGE
from imageregistry.prune.wire import verify_status

VERIFY_FIELDS: dict[str, type] = {"continue": str, "limit": int}
_MAX_TOKEN = 200  # longer than any digest


class RegistryVerifications(ResourceHandler):
    info = ResourceInfo(
        IMAGE_GROUP,
        "registryverifications",
        "registryverification",
        "RegistryVerification",
        False,
        verbs=("create",),
    )
    schema = object_schema(spec=dict.fromkeys(VERIFY_FIELDS, ANY), status=ANY)

    def __init__(self, pruner: Pruner) -> None:
        self._pruner = pruner

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("spec") or {}
        if not isinstance(spec, dict):
            raise bad_request("spec must be an object")
        _check_types(spec, VERIFY_FIELDS)
        after = spec.get("continue") or ""
        if len(after) > _MAX_TOKEN:
            raise bad_request("spec.continue is not a token this server handed out")
        limit = spec.get("limit")
        if limit is None:
            limit = DEFAULT_PAGE
        if not 1 <= limit <= MAX_PAGE:
            raise bad_request(f"spec.limit must be from 1 to {MAX_PAGE}, got {limit}")
        page = run_async(lambda: self._pruner.verify(after, limit, dry_run=ctx.dry_run))
        return _result_object("RegistryVerification", body, verify_status(page), ctx)
