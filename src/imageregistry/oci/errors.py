"""The OCI error envelope: one `RegistryError` and the one table mapping domain errors to it.

Handlers raise; `render` is the one renderer of the OCI surfaces (`/v2/` and the signature
extension): it answers a `RegistryError` as raised, a domain error through the table below, and
anything else as a 500 `UNKNOWN` envelope logged with its traceback (the log line names the request
id, which the message repeats for the user to quote). `error_response` renders
`{"errors":[{"code","message","detail"}]}` with the status of the code (distribution-spec v1.1,
"Error Codes"). Domain errors from the layers below (storage, metadata, content) are translated in
`from_domain` so every surface speaks the same codes.
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from imageregistry.auth.cluster.errors import ClusterUnavailable
from imageregistry.content.digest import InvalidDigest
from imageregistry.content.manifest import InvalidManifest
from imageregistry.content.reference import InvalidName, InvalidTag

# The codes, the error value and its envelope live in `errorcodes` (shared with the blob
# port); they are the names every OCI handler imports from here.
from imageregistry.errorcodes import MESSAGES as MESSAGES
from imageregistry.errorcodes import STATUS as STATUS
from imageregistry.errorcodes import RegistryError as RegistryError
from imageregistry.errorcodes import envelope as envelope
from imageregistry.httpinput import BodyTooLarge, InputError
from imageregistry.metadata import registry as reg
from imageregistry.metadata import registry_manifests as regm
from imageregistry.metadata import signatures as sigdb
from imageregistry.metadata.db import DatabaseUnavailable
from imageregistry.metadata.quota import QuotaRefused
from imageregistry.metadata.tag_policies import TagImmutable
from imageregistry.observability import requestid
from imageregistry.storage import errors as st

log = logging.getLogger("imageregistry.oci")


def error_response(error: RegistryError, head: bool = False) -> JSONResponse:
    # The envelope's own length wins: a Content-Length copied from session headers
    # (uploads' 416) would frame the body wrongly and desynchronise a kept-alive connection.
    headers = {k: v for k, v in error.headers.items() if k.lower() != "content-length"}
    response = JSONResponse(envelope(error), status_code=error.status, headers=headers)
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
    # A push or DELETE that would move or remove a tag an ImageTagPolicy makes immutable.
    (TagImmutable, "DENIED", None),
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


def render(exc: Exception, request: Request) -> Response:
    """The OCI response for any exception a request of the OCI surfaces raised. A HEAD gets
    the status and headers only."""
    if isinstance(exc, ClientDisconnect):
        return Response(status_code=400)  # nobody is listening any more
    error = exc if isinstance(exc, RegistryError) else from_domain(exc)
    if error is None:
        log.error("registry request failed", exc_info=exc)
        message = f"internal error ({type(exc).__name__}); request id {requestid.current.get()}"
        error = RegistryError("UNKNOWN", message)
    if request.method == "HEAD":
        return Response(status_code=error.status, headers=error.headers)
    return error_response(error)
