"""Authorization by the cluster: one `SubjectAccessReview` per decision not yet cached.

`SubjectAccessReviewAuthorizer` is an `auth.authorizer.Authorizer`: it receives the very
`Attributes` the local RBAC authorizer would (registry actions through
`registry_attributes`, API requests with their own verb, group, resource, subresource,
name and namespace; non-resource paths) and asks the cluster, for the user with their
groups, uid and extra, exactly as kube-apiserver's webhook authorizer does. The answer's
`allowed` decides; an answer without a boolean `allowed`, or no answer, raises
`ClusterUnavailable` (503 to the client), never a decision. Allowed and denied answers are
cached for `allowed_ttl` and `denied_ttl`, keyed by the SHA-256 of the review's spec;
a denial that carries an `evaluationError` (the cluster could not evaluate every rule) is
not cached.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from imageregistry import apigroups
from imageregistry.auth.authorizer import Verdict
from imageregistry.auth.cluster.cache import Coalescer, DecisionCache
from imageregistry.auth.cluster.client import ClusterClient
from imageregistry.auth.cluster.errors import ClusterUnavailable
from imageregistry.auth.identity import Attributes

SAR_PATH = f"/apis/{apigroups.AUTHORIZATION}/v1/subjectaccessreviews"
SAR_API_VERSION = f"{apigroups.AUTHORIZATION}/v1"


def review_spec(attrs: Attributes) -> dict[str, Any]:
    """The `SubjectAccessReviewSpec` for one request (empty fields left out)."""
    user = attrs.user
    spec: dict[str, Any] = {"user": user.username, "groups": list(user.groups)}
    if user.uid:
        spec["uid"] = user.uid
    if user.extra:
        spec["extra"] = {key: list(values) for key, values in sorted(user.extra.items())}
    if attrs.is_resource_request:
        resource = {
            "namespace": attrs.namespace,
            "verb": attrs.verb,
            "group": attrs.api_group,
            "resource": attrs.resource,
            "subresource": attrs.subresource,
            "name": attrs.name,
        }
        spec["resourceAttributes"] = {k: v for k, v in resource.items() if v}
    else:
        spec["nonResourceAttributes"] = {"path": attrs.path, "verb": attrs.verb}
    return spec


class SubjectAccessReviewAuthorizer:
    def __init__(
        self,
        client: ClusterClient,
        allowed_ttl: float,
        denied_ttl: float,
        cache_size: int,
    ) -> None:
        self._client = client
        self._cache: DecisionCache[Verdict] = DecisionCache(allowed_ttl, denied_ttl, cache_size)
        self._inflight: Coalescer[Verdict] = Coalescer()

    def authorize(self, attrs: Attributes) -> Verdict:
        spec = review_spec(attrs)
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        return self._inflight.run(key, lambda: self._review(key, spec))

    def _review(self, key: str, spec: dict[str, Any]) -> Verdict:
        cached = self._cache.get(key)  # answered while this thread waited for its turn
        if cached is not None:
            return cached
        body = {"apiVersion": SAR_API_VERSION, "kind": "SubjectAccessReview", "spec": spec}
        answer = self._client.create(SAR_PATH, body)
        status = answer.get("status")
        if not isinstance(status, dict) or not isinstance(status.get("allowed"), bool):
            raise self._malformed("status.allowed is missing or not a boolean")
        allowed = status["allowed"]
        if allowed and status.get("denied") is True:
            raise self._malformed("status says both allowed and denied")
        reason = status.get("reason")
        verdict = Verdict(allowed, reason if isinstance(reason, str) else "")
        if allowed or not status.get("evaluationError"):
            self._cache.put(key, verdict, positive=allowed)
        return verdict

    def _malformed(self, what: str) -> ClusterUnavailable:
        return self._client.failure(f"malformed SubjectAccessReview answer: {what}")
