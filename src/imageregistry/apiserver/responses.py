"""The Kubernetes-style API's responses: JSON bodies, and the one renderer of its failures.

Every failure on `/api`, `/apis`, `/openapi` and the usage endpoints reaches `render`, which
answers a `Status` kubectl can print (docs/kubectl.md#error-rendering): an `ApiError` as
raised, a number or body `httpinput` refused as 400 or 413, a database that takes no writes
or a cluster that does not answer as 503 with `Retry-After`, a push a ResourceQuota or
LimitRange refuses as 403, and anything else as a 500
`InternalError` logged with its traceback (the log line names the request id).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from starlette.responses import Response

from imageregistry.apiserver.codec import warning_header
from imageregistry.apiserver.status import (
    ApiError,
    bad_request,
    internal_error,
    service_unavailable,
    too_large,
)
from imageregistry.auth.cluster.errors import ClusterUnavailable
from imageregistry.httpinput import BodyTooLarge, InputError
from imageregistry.metadata.db import DatabaseUnavailable
from imageregistry.metadata.quota import QuotaRefused

log = logging.getLogger("imageregistry.apiserver")
JSON_TYPE = "application/json"


def json_response(
    body: Any,
    status: int = 200,
    warnings: Sequence[str] = (),
    headers: dict[str, str] | None = None,
) -> Response:
    headers = dict(headers or {})
    if warnings:
        headers["Warning"] = warning_header(list(warnings))
    return Response(json.dumps(body, separators=(",", ":")), status, headers, media_type=JSON_TYPE)


def error_response(error: ApiError) -> Response:
    return json_response(error.to_status(), error.code, headers=error.headers())


def input_error(exc: InputError) -> ApiError:
    """The Status for a number, JSON document or body `httpinput` refused: 413 for a body
    over the limit (kube's RequestEntityTooLarge), 400 BadRequest for the rest."""
    if isinstance(exc, BodyTooLarge):
        return too_large(exc.limit)
    return bad_request(str(exc))


def render(exc: Exception) -> Response:
    """The `Status` response for any exception a request of this surface raised."""
    if isinstance(exc, ApiError):
        return error_response(exc)
    if isinstance(exc, InputError):
        return error_response(input_error(exc))
    # read-only, a write conflict, or (cluster mode) no answer from the cluster: retryable
    if isinstance(exc, DatabaseUnavailable | ClusterUnavailable):
        response = error_response(service_unavailable(str(exc), exc.retry_after))
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, QuotaRefused):  # a ResourceQuota or LimitRange of the namespace
        return error_response(ApiError(403, "Forbidden", str(exc)))
    log.error("API request failed", exc_info=exc)
    return error_response(internal_error(type(exc).__name__))
