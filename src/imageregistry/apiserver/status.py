"""Kubernetes `Status` errors: the one exception type API handlers raise.

kubectl only renders an error body that is a real `Status` (`kind: Status`, `apiVersion: v1`); it
prints `Error from server (<reason>): <message>` (docs/kubectl.md#error-rendering). `ApiError`
carries the HTTP code, the reason and the message, plus optional `details`; `responses.render`
turns it into the JSON body. The constructors below word messages the way kube-apiserver does,
since users and scripts match on that text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldCause:
    """One `details.causes` entry of an Invalid Status."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"


@dataclass
class ApiError(Exception):
    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def to_status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body

    def headers(self) -> dict[str, str]:
        """HTTP headers the error implies: `Retry-After` when the Status carries
        `details.retryAfterSeconds` (as kube-apiserver's 429s do)."""
        retry = self.details.get("retryAfterSeconds")
        return {"Retry-After": str(retry)} if retry is not None else {}


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_qualified(resource, group)} "{name}" not found',
        {"name": name, "group": group, "kind": resource},
    )


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{_qualified(resource, group)} "{name}" already exists',
        {"name": name, "group": group, "kind": resource},
    )


def conflict(resource: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": {why}',
        {"name": name, "group": group, "kind": resource},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(resource: str, group: str, name: str, why: str) -> ApiError:
    subject = _qualified(resource, group)
    if name:
        subject = f'{subject} "{name}"'
    details: dict[str, Any] = {"group": group, "kind": resource}
    if name:
        details["name"] = name
    return ApiError(403, "Forbidden", f"{subject} is forbidden: {why}", details)


def unauthorized(message: str = "Unauthorized") -> ApiError:
    return ApiError(401, "Unauthorized", message)


def too_many_requests(message: str, retry_after: int) -> ApiError:
    return ApiError(429, "TooManyRequests", message, {"retryAfterSeconds": retry_after})


def method_not_allowed(verb: str, resource: str) -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", f"{verb} is not supported on resources of kind {resource!r}"
    )


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, "RequestEntityTooLarge", f"the request body is larger than the limit of {limit} bytes"
    )


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format: {content_type}",
    )


def invalid(kind: str, group: str, name: str, causes: Sequence[FieldCause]) -> ApiError:
    """422 Invalid, worded `Kind.group "name" is invalid: field: message, ...`."""
    qualified = f"{kind}.{group}" if group else kind
    text = ", ".join(f"{c.field}: {c.message}" if c.field else c.message for c in causes)
    if len(causes) > 1:
        text = "[" + text + "]"
    return ApiError(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {text}',
        {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [
                {"reason": c.reason, "message": c.message, "field": c.field} for c in causes
            ],
        },
    )


def expired(message: str) -> ApiError:
    """410 Expired: a resourceVersion older than the history the server keeps."""
    return ApiError(410, "Expired", message)


def service_unavailable(message: str, retry_after: int | None = None) -> ApiError:
    """503 ServiceUnavailable; `retryAfterSeconds` as Kubernetes sends it for a retry."""
    details = {"retryAfterSeconds": retry_after} if retry_after is not None else {}
    return ApiError(503, "ServiceUnavailable", message, details)


def internal_error(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}")
