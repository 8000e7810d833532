"""`n`/`last` pagination with `Link` headers for tag lists and the catalog (spec §"Listing")."""

from __future__ import annotations

import bisect
from urllib.parse import urlencode

from starlette.requests import Request

from imageregistry.httpinput import InputError, parse_int
from imageregistry.oci.errors import RegistryError

MAX_PAGE = 10_000


def page_size(request: Request) -> int | None:
    raw = request.query_params.get("n")
    if raw is None or raw == "":
        return None
    try:
        n = parse_int(raw, "n")
    except InputError as exc:
        raise RegistryError("PAGINATION_NUMBER_INVALID", str(exc)) from None
    return min(n, MAX_PAGE)


def paginate(request: Request, path: str, items: list[str]) -> tuple[list[str], dict[str, str]]:
    """The page of sorted `items` after `last` (exclusive) and the `Link` header if more."""
    n = page_size(request)
    last = request.query_params.get("last")
    start = bisect.bisect_right(items, last) if last else 0
    if n is None:
        return items[start:], {}
    page = items[start : start + n]
    if start + n < len(items) and page:
        query = urlencode({"n": n, "last": page[-1]})
        return page, {"Link": f'<{path}?{query}>; rel="next"'}
    return page, {}
