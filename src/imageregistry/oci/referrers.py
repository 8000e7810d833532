"""The referrers API: `GET /v2/<name>/referrers/<digest>[?artifactType=...]`.

Always 200 with an OCI image index of the manifests in this repository whose `subject`
is the digest (distribution-spec v1.1 "Listing Referrers"), empty when none match; with an
`artifactType` filter the response says so in `OCI-Filters-Applied`.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse, Response

from imageregistry.content.digest import Digest
from imageregistry.content.mediatypes import OCI_INDEX
from imageregistry.metadata.registry_manifests import Referrer
from imageregistry.oci.context import Ctx


def _annotations(content: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(content)
    except (ValueError, RecursionError):
        return None
    value = doc.get("annotations") if isinstance(doc, dict) else None
    if not isinstance(value, dict):
        return None
    # Only string values (image-spec annotations.md), even for content stored before
    # pushes checked this: one odd value would break clients decoding the whole index.
    strings = {k: v for k, v in value.items() if isinstance(v, str)}
    return strings or None


def descriptor(referrer: Referrer) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "mediaType": referrer.media_type,
        "digest": referrer.digest,
        "size": referrer.size,
    }
    if referrer.artifact_type:
        entry["artifactType"] = referrer.artifact_type
    annotations = _annotations(referrer.content)
    if annotations:
        entry["annotations"] = annotations
    return entry


async def list_referrers(ctx: Ctx) -> Response:
    subject = Digest.parse(ctx.arg)
    found = await ctx.run(ctx.registry.manifests.referrers, ctx.repo, str(subject))
    wanted = ctx.request.query_params.get("artifactType")
    headers: dict[str, str] = {}
    if wanted:
        found = [r for r in found if r.artifact_type == wanted]
        headers["OCI-Filters-Applied"] = "artifactType"
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(r) for r in found]}
    return JSONResponse(body, headers=headers, media_type=OCI_INDEX)
