"""Request path → (surface, route template), the labels of the request metrics.

The OCI surface routes on the raw path with its own regular expressions
(`oci.v2_routes.V2_ROUTES`) and the API parses its paths by hand, so there is no framework
route object to read the template from; this module names the template from the path's
shape instead. It never returns a piece of the path a client chose (a repository, tag,
digest, upload id, namespace or object name): only fixed words and placeholders, so the
number of series stays bounded whatever clients send. Unknown shapes are `other`.
"""

from __future__ import annotations

OCI = "oci"
EXTENSIONS = "extensions"
API = "api"
OTHER = "other"

_FIXED = {
    "/v2": (OCI, "/v2/"),
    "/v2/": (OCI, "/v2/"),
    "/v2/token": (OCI, "/v2/token"),
    "/v2/_catalog": (OCI, "/v2/_catalog"),
    "/healthz": (OTHER, "/healthz"),
    "/livez": (OTHER, "/livez"),
    "/readyz": (OTHER, "/readyz"),
    "/version": (OTHER, "/version"),
    "/metrics": (OTHER, "/metrics"),
}

_MANIFEST = "/v2/{name}/manifests/{reference}"
_BLOB = "/v2/{name}/blobs/{digest}"
UPLOAD_START = "/v2/{name}/blobs/uploads/"
UPLOAD = "/v2/{name}/blobs/uploads/{uuid}"
_TAGS = "/v2/{name}/tags/list"
_REFERRERS = "/v2/{name}/referrers/{digest}"
_SIGNATURES = "/extensions/v2/{name}/signatures/{digest}"

# The API's path words that are part of its grammar; anything else is a placeholder.
_API_WORDS = frozenset(("api", "apis", "v1", "v3", "namespaces", "openapi"))


def classify(path: str) -> tuple[str, str]:
    fixed = _FIXED.get(path)
    if fixed is not None:
        return fixed
    if path.startswith("/v2/"):
        return OCI, _oci_route(path)
    if path.startswith("/extensions/v2/"):
        return EXTENSIONS, _SIGNATURES if "/signatures/" in path else "other"
    if path.startswith(("/api", "/openapi")):
        return API, _api_route(path)
    return OTHER, "other"


def _oci_route(path: str) -> str:
    parts = path.rsplit("/", 3)  # e.g. ["/v2/ns", "app", "manifests", "latest"]
    if len(parts) < 4:
        return "other"
    kind = parts[2]
    if kind == "manifests":
        return _MANIFEST
    if kind == "blobs":
        return UPLOAD_START if parts[3] == "uploads" else _BLOB
    if kind == "uploads" and parts[1] == "blobs":
        return UPLOAD_START if parts[3] == "" else UPLOAD
    if kind == "tags" and parts[3] == "list":
        return _TAGS
    if kind == "referrers":
        return _REFERRERS
    return "other"


def _api_route(path: str) -> str:
    """`/apis/image.alauda.io/v1/namespaces/ns/imagestreams/app` →
    `/apis/{group}/v1/namespaces/{namespace}/{resource}/{name}`: the grammar's fixed words
    are kept, every other segment becomes the placeholder for its position."""
    segments = [s for s in path.split("/") if s]
    if len(segments) > 9:
        return "other"
    out: list[str] = []
    for index, segment in enumerate(segments):
        if segment in _API_WORDS and not (out and out[-1] == "namespaces"):
            out.append(segment)
        else:
            out.append(_placeholder(out, index, segments))
    return "/" + "/".join(out)


def _placeholder(done: list[str], index: int, segments: list[str]) -> str:
    previous = done[-1] if done else ""
    if previous == "apis":
        return "{group}"
    if previous == "namespaces":
        return "{namespace}"
    if done[:1] == ["openapi"]:
        return "{path}"
    if previous in ("v1", "{namespace}"):
        return "{resource}"
    if previous == "{resource}":
        return "{name}"
    if previous == "{name}":
        return "{subresource}"
    return "{segment}"
