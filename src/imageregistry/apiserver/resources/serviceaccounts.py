"""`v1` ServiceAccounts and their `token` subresource (the TokenRequest API).

`kubectl create token SA` POSTs a TokenRequest with an empty spec (docs/kubectl.md#create-token);
the server defaults it (one hour, the server's own audience), signs a JWT whose subject is
`system:serviceaccount:<ns>:<name>` with the service-account groups, and carries the `kubernetes.io`
claim (namespace, name, uid) the authenticator uses to refuse tokens of deleted or re-created
accounts. Minting needs `create serviceaccounts/token` in the account's namespace (the route
authorizes the subresource), which only `admin` grants. An explicit `expirationSeconds` outside 10
minutes..1 year is Invalid (0 included, as upstream); a `boundObjectRef` is refused, since no object
it can name exists here.
"""

from __future__ import annotations

from typing import Any

from imageregistry import apigroups
from imageregistry.apiserver.codec import ANY, object_schema
from imageregistry.apiserver.resource import RequestContext, ResourceInfo
from imageregistry.apiserver.status import (
    FieldCause,
    bad_request,
    invalid,
    method_not_allowed,
    not_found,
)
from imageregistry.apiserver.store import StoredResource
from imageregistry.auth.identity import service_account_groups, service_account_username
from imageregistry.auth.tokens import ServiceAccountRef, TokenSigner
from imageregistry.clock import rfc3339
from imageregistry.metadata.db import Database

DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600  # kube-apiserver's lower bound
MAX_EXPIRATION = 60 * 60 * 24 * 365

TOKEN_REQUEST_SCHEMA = object_schema(
    spec={
        "audiences": ANY,
        "expirationSeconds": ANY,
        "boundObjectRef": {"kind": ANY, "apiVersion": ANY, "name": ANY, "uid": ANY},
    },
    status={"token": ANY, "expirationTimestamp": ANY},
)


BINDABLE_KINDS = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}


def _refuse_bound_object(ref: Any) -> None:
    """A token bound to an object must die with it, and this server stores no Pods, Secrets
    or Nodes: like kube-apiserver asked for a missing object, answer NotFound (other kinds:
    BadRequest) instead of minting a token whose binding nothing would ever enforce."""
    if ref is None:
        return
    if not isinstance(ref, dict):
        raise bad_request("spec.boundObjectRef must be an object")
    kind, name = ref.get("kind"), ref.get("name")
    if kind not in BINDABLE_KINDS:
        raise bad_request(f"cannot bind token to object of kind {kind!r}")
    raise not_found(BINDABLE_KINDS[kind], "", str(name or ""))


class ServiceAccounts(StoredResource):
    info = ResourceInfo(
        "", "serviceaccounts", "serviceaccount", "ServiceAccount", True, short_names=("sa",)
    )
    schema = object_schema(secrets=ANY, imagePullSecrets=ANY, automountServiceAccountToken=ANY)
    subresources = ("token",)

    def __init__(self, db: Database, signer: TokenSigner, audience: str) -> None:
        super().__init__(db)
        self._signer = signer
        self._audience = audience

    def subresource_schema(self, sub: str) -> Any:
        return TOKEN_REQUEST_SCHEMA

    def subresource(
        self,
        ctx: RequestContext,
        method: str,
        namespace: str,
        name: str,
        sub: str,
        body: dict[str, Any] | None,
    ) -> tuple[int, dict[str, Any]]:
        if sub != "token" or method != "POST":
            raise method_not_allowed(method, f"serviceaccounts/{sub}")
        account = self.get(ctx, namespace, name)
        request = body or {}
        spec = dict(request.get("spec") or {})
        _refuse_bound_object(spec.get("boundObjectRef"))
        expiration = spec.get("expirationSeconds")
        if expiration is None:
            expiration = DEFAULT_EXPIRATION
        audiences = spec.get("audiences") or [self._audience]
        causes = []
        if (
            isinstance(expiration, bool)
            or not isinstance(expiration, int)
            or not MIN_EXPIRATION <= expiration <= MAX_EXPIRATION
        ):
            causes.append(
                FieldCause(
                    "spec.expirationSeconds",
                    f"Invalid value: {expiration!r}: may not specify a duration less than 10 "
                    "minutes or more than a year",
                )
            )
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            causes.append(FieldCause("spec.audiences", "Invalid value: must be a list of strings"))
        if causes:
            raise invalid("TokenRequest", apigroups.AUTHENTICATION, name, causes)
        token, expiry = self._signer.issue(
            service_account_username(namespace, name),
            groups=service_account_groups(namespace),
            audiences=audiences,
            expires_in_seconds=expiration,
            service_account=ServiceAccountRef(namespace, name, account["metadata"].get("uid", "")),
            extra_claims={"sa_namespace": namespace, "sa_name": name},
        )
        spec.update(audiences=audiences, expirationSeconds=expiration)
        now = ctx.clock()
        response = {
            "kind": "TokenRequest",
            "apiVersion": f"{apigroups.AUTHENTICATION}/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": rfc3339(now)},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": rfc3339(expiry)},
        }
        return 201, response
