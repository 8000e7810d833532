"""Posting review objects to (and reading a ConfigMap from) the cluster: one pooled HTTPS
client per process.

Every way the exchange can fail — no connection, a step slower than `timeout`, a status
other than 201/200, a body that is not a JSON object of the kind asked for — becomes
`ClusterUnavailable` with a message for the operator. The message names the cluster and
what went wrong, never the request body (it may hold a token).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from imageregistry.auth.cluster.errors import ClusterUnavailable
from imageregistry.auth.cluster.kubeconfig import ClusterConnection, KubeconfigError

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1 << 20  # a review answer is small; more is not a review


class ClusterClient:
    def __init__(self, connection: ClusterConnection, timeout: float) -> None:
        self.connection = connection
        self.server = connection.server
        self._http = httpx.Client(
            base_url=connection.server,
            verify=connection.tls,
            timeout=httpx.Timeout(timeout),
            headers={"Accept": "application/json", "User-Agent": "image-registry"},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to `path`; the answer's JSON object of the same kind."""
        return self._exchange("POST", path, body["kind"], body)

    def get(self, path: str, kind: str) -> dict[str, Any]:
        """GET `path`; the answer's JSON object, which must be of `kind`."""
        return self._exchange("GET", path, kind, None)

    def _exchange(
        self, method: str, path: str, kind: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        try:
            token = self.connection.bearer()
        except KubeconfigError as exc:
            raise self.failure(f"the registry's own credentials: {exc}") from None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            with self._http.stream(method, path, json=body, headers=headers) as response:
                raw = b""
                for chunk in response.iter_bytes():
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise self.failure(f"the {kind} answer is over {MAX_ANSWER_BYTES} bytes")
                status = response.status_code
        except httpx.TimeoutException:
            raise self.failure(f"no {kind} answer within the timeout") from None
        except httpx.HTTPError as exc:
            raise self.failure(f"cannot reach the cluster ({type(exc).__name__}: {exc})") from None
        if status not in (200, 201):
            raise self.failure(f"the cluster answered the {kind} with HTTP {status}{_message(raw)}")
        try:
            answer = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise self.failure(f"the {kind} answer is not JSON") from None
        if not isinstance(answer, dict) or answer.get("kind") != kind:
            raise self.failure(f"the answer is not a {kind}")
        return answer

    def failure(self, reason: str) -> ClusterUnavailable:
        message = f"the cluster at {self.server} cannot decide: {reason}"
        log.warning("%s", message)
        return ClusterUnavailable(message)


def _message(raw: bytes) -> str:
    """The `message` of a Kubernetes Status answer (e.g. the registry's service account
    may not create reviews), cut short."""
    try:
        status = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return f": {message[:300]}" if isinstance(message, str) and message else ""
