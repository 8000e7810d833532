"""Tag listing (`GET /v2/<name>/tags/list`) and the catalog (`GET /v2/_catalog`).

Both are sorted lexically with `n`/`last` pagination and an RFC 5988 `Link` header
while more results remain. The catalog requires the cluster-wide `list imagestreams`
permission (docs/behaviour.md#access-control).
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from imageregistry.oci.context import Ctx
from imageregistry.oci.pagination import paginate


async def list_tags(ctx: Ctx) -> Response:
    tags = await ctx.run(ctx.registry.meta.list_tags, ctx.repo)
    page, headers = paginate(ctx.request, f"/v2/{ctx.repo}/tags/list", tags)
    return JSONResponse({"name": str(ctx.repo), "tags": page}, headers=headers)


async def catalog(ctx: Ctx) -> Response:
    names = await ctx.run(ctx.registry.meta.list_repositories)
    page, headers = paginate(ctx.request, "/v2/_catalog", names)
    return JSONResponse({"repositories": page}, headers=headers)
