"""The OCI error envelope: one `RegistryError` and the one table mapping domain errors to it.

Handlers raise; `error_response` renders `{"errors":[{"code","message","detail"}]}` with
the status of the code (distribution-spec v1.1, "Error Codes"). Domain errors from the
layers below (storage, metadata, content) are translated in `from_domain` so every
surface speaks the same codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from imageregistry.auth.cluster.errors import ClusterUnavailable
from imageregistry.content.digest import InvalidDigest
from imageregistry.content.manifest import InvalidManifest
from imageregistry.content.reference import InvalidName, InvalidTag
from imageregistry.httpinput import BodyTooLarge, InputError
from imageregistry.metadata import registry as reg
from imageregistry.metadata import registry_manifests as regm
from imageregistry.metadata import signatures as sigdb
from imageregistry.metadata.db import DatabaseUnavailable
from imageregistry.metadata.quota import QuotaRefused
from imageregistry.storage import errors as st

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


def error_response(error: RegistryError, head: bool = False) -> JSONResponse:
    entry: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.detail is not None:
        entry["detail"] = error.detail
    # The envelope's own length wins: a Content-Length copied from session headers
    # (uploads' 416) would frame the body wrongly and desynchronise a kept-alive connection.
    headers = {k: v for k, v in error.headers.items() if k.lower() != "content-length"}
    response = JSONResponse({"errors": [entry]}, status_code=error.status, headers=headers)
    if head:
        response.body = b""
    return response


# Domain error type -> (code, status override or None). First match wins (subclasses first).
_TABLE: tuple[tuple[type[BaseException], str, int | None], ...] = (
    (InvalidName, "NAME_INVALID", None),
    (InvalidTag, "MANIFEST_INVALID", None),
    (InvalidDigest, "DIGEST_INVALID", None),
    (InvalidManifest, "MANIFEST_INVALID", None),
    (reg.NameUnknown, "NAME_UNKNOWN", None),
    (reg.BlobUnknown, "BLOB_UNKNOWN", None),
    (reg.UploadUnknown, "BLOB_UPLOAD_UNKNOWN", None),
    (reg.TagUnknown, "MANIFEST_UNKNOWN", None),
    (regm.ManifestUnknown, "MANIFEST_UNKNOWN", None),
    (regm.ManifestBlobUnknown, "MANIFEST_BLOB_UNKNOWN", None),
    (regm.ManifestSizeMismatch, "MANIFEST_INVALID", None),
    # A pushed cosign signature manifest whose signatures may not be recorded.
    (sigdb.SignatureDenied, "DENIED", None),
    (sigdb.SignatureLimitExceeded, "DENIED", 413),
    # A ResourceQuota or LimitRange of the namespace has no room for the push.
    (QuotaRefused, "DENIED", None),
    (st.UploadNotFound, "BLOB_UPLOAD_UNKNOWN", None),
    (st.UploadInProgress, "BLOB_UPLOAD_INVALID", 409),
    (st.DigestMismatch, "DIGEST_INVALID", None),
    (st.SizeMismatch, "SIZE_INVALID", None),
    (st.BlobNotFound, "BLOB_UNKNOWN", None),
    (st.StorageFull, "UNKNOWN", 507),  # uploads add Retry-After and the session's Range
    (st.StorageUnavailable, "UNAVAILABLE", None),  # object store unreachable: 503, Retry-After
    # httpinput: a body over its surface's limit; any other number or JSON document out of
    # bounds that its handler did not word itself ("invalid set of parameters", spec)
    (BodyTooLarge, "SIZE_INVALID", 413),
    (InputError, "UNSUPPORTED", 400),
    # The database takes no writes (read-only) or lost a write conflict: retryable.
    (DatabaseUnavailable, "UNAVAILABLE", None),
    # Cluster mode: the cluster gave no TokenReview/SubjectAccessReview answer.
    (ClusterUnavailable, "UNAVAILABLE", None),
)


def from_domain(exc: BaseException) -> RegistryError | None:
    """The RegistryError for a domain exception, or None if it is not one of ours."""
    for kind, code, status in _TABLE:
        if isinstance(exc, kind):
            retry = getattr(exc, "retry_after", None)
            headers = {"Retry-After": str(retry)} if retry is not None else None
            return RegistryError(code, str(exc), status=status, headers=headers)
    return None
