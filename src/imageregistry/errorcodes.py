"""The OCI distribution error codes, their statuses and messages, and the error value.

Both ports answer errors in the distribution spec's envelope: the main port's `/v2/`
handlers (rendered by `oci.errors`) and the blob port (`blobport.server`, over h11). The
table and the value are here, free of any web framework, so the blob port uses them without
importing the `oci` package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STATUS: dict[str, int] = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
    "PAGINATION_NUMBER_INVALID": 400,
    "RANGE_INVALID": 416,
    "UNAVAILABLE": 503,
    # Not in the spec's table: its catch-all, the signature extension's own two codes, and
    # the blob port's answers to what is not a blob link at all.
    "UNKNOWN": 500,
    "SIGNATURE_INVALID": 400,
    "SIGNATURE_EXISTS": 409,
    "BAD_REQUEST": 400,
    "NOT_FOUND": 404,
}

MESSAGES: dict[str, str] = {
    "BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UPLOAD_INVALID": "blob upload invalid",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown to registry",
    "DIGEST_INVALID": "provided digest did not match uploaded content",
    "MANIFEST_BLOB_UNKNOWN": "manifest references a manifest or blob unknown to registry",
    "MANIFEST_INVALID": "manifest invalid",
    "MANIFEST_UNKNOWN": "manifest unknown to registry",
    "NAME_INVALID": "invalid repository name",
    "NAME_UNKNOWN": "repository name not known to registry",
    "SIZE_INVALID": "provided length did not match content length",
    "UNAUTHORIZED": "authentication required",
    "DENIED": "requested access to the resource is denied",
    "UNSUPPORTED": "the operation is unsupported",
    "TOOMANYREQUESTS": "too many requests",
    "PAGINATION_NUMBER_INVALID": "invalid number of results requested",
    "RANGE_INVALID": "invalid content range",
    "UNAVAILABLE": "service unavailable",
    "UNKNOWN": "unknown error",
    "SIGNATURE_INVALID": "invalid signature",
    "SIGNATURE_EXISTS": "signature already exists",
    "BAD_REQUEST": "bad request",
    "NOT_FOUND": "not found",
}


class RegistryError(Exception):
    """An OCI error response: code, message, optional detail, status and extra headers."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or MESSAGES[code])
        self.code = code
        self.message = message or MESSAGES[code]
        self.detail = detail
        self.status = status or STATUS[code]
        self.headers = dict(headers or {})


def envelope(error: RegistryError) -> dict[str, Any]:
    """`{"errors": [{"code", "message", "detail"}]}`: the body of every OCI error."""
    entry: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.detail is not None:
        entry["detail"] = error.detail
    return {"errors": [entry]}
