"""Computed, never-stored resources: access reviews, rules reviews, whoami and token reviews.

`authorization.k8s.io/v1` SelfSubjectAccessReview (`kubectl auth can-i`), SubjectAccessReview,
LocalSubjectAccessReview and SelfSubjectRulesReview (`kubectl auth can-i --list`), and
`authentication.k8s.io/v1` SelfSubjectReview (`kubectl auth whoami`) and TokenReview. Each
echoes the request with a computed `status`, as kube-apiserver does (201 Created). The
dispatcher has authorized `create` on the review; the access a review reports is its
subject's, evaluated by `admission.review_answer`.
"""

from __future__ import annotations

from typing import Any

from imageregistry import apigroups
from imageregistry.apiserver.admission import review_answer
from imageregistry.apiserver.codec import ANY, object_schema
from imageregistry.apiserver.resource import RequestContext, ResourceHandler, ResourceInfo
from imageregistry.apiserver.status import FieldCause, bad_request, invalid
from imageregistry.auth.authn import Authenticator, Unauthenticated
from imageregistry.auth.identity import Attributes, UserInfo, with_derived_groups
from imageregistry.auth.resolver import RuleResolver

AUTHZ = apigroups.AUTHORIZATION
AUTHN = apigroups.AUTHENTICATION
RESOURCE_ATTRS = {
    "namespace": ANY,
    "verb": ANY,
    "group": ANY,
    "version": ANY,
    "resource": ANY,
    "subresource": ANY,
    "name": ANY,
    "fieldSelector": ANY,
    "labelSelector": ANY,
}
NON_RESOURCE_ATTRS = {"path": ANY, "verb": ANY}
SAR_STATUS = {"allowed": ANY, "denied": ANY, "reason": ANY, "evaluationError": ANY}
SAR_SPEC = {
    "resourceAttributes": RESOURCE_ATTRS,
    "nonResourceAttributes": NON_RESOURCE_ATTRS,
    "user": ANY,
    "groups": ANY,
    "extra": ANY,
    "uid": ANY,
}


def user_info_json(user: UserInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"username": user.username, "groups": list(user.groups)}
    if user.uid:
        out["uid"] = user.uid
    if user.extra:
        out["extra"] = {k: list(v) for k, v in user.extra.items()}
    return out


def _str(d: dict[str, Any], key: str) -> str:
    value = d.get(key) or ""
    if not isinstance(value, str):
        raise bad_request(f"{key} must be a string")
    return value


def attributes_from_spec(user: UserInfo, spec: dict[str, Any], kind: str) -> Attributes:
    res, nonres = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if res and nonres:  # kube's validation: one or the other, never both
        raise invalid(
            kind,
            AUTHZ,
            "",
            [
                FieldCause(
                    "spec.nonResourceAttributes",
                    "Invalid value: cannot be specified in combination with resourceAttributes",
                )
            ],
        )
    if isinstance(res, dict) and res:
        return Attributes.for_resource(
            user,
            _str(res, "verb"),
            _str(res, "group"),
            _str(res, "resource"),
            subresource=_str(res, "subresource"),
            name=_str(res, "name"),
            namespace=_str(res, "namespace"),
        )
    if isinstance(nonres, dict) and nonres:
        return Attributes.for_path(user, _str(nonres, "verb"), _str(nonres, "path"))
    raise invalid(
        kind,
        AUTHZ,
        "",
        [
            FieldCause(
                "spec.resourceAttributes",
                "Required value: exactly one of nonResourceAttributes or resourceAttributes "
                "must be specified",
                "FieldValueRequired",
            )
        ],
    )


class _Review(ResourceHandler):
    def __init__(self, resolver: RuleResolver) -> None:
        self.resolver = resolver

    def subject(self, ctx: RequestContext, spec: dict[str, Any]) -> UserInfo:
        return ctx.user

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("spec")
        if not isinstance(spec, dict):
            spec = {}
        attrs = attributes_from_spec(self.subject(ctx, spec), spec, self.info.kind)
        if namespace and attrs.is_resource_request and attrs.namespace not in ("", namespace):
            raise bad_request(
                f"spec.resourceAttributes.namespace must match the request namespace {namespace!r}"
            )
        if namespace and attrs.is_resource_request:
            attrs = Attributes.for_resource(
                attrs.user,
                attrs.verb,
                attrs.api_group,
                attrs.resource,
                subresource=attrs.subresource,
                name=attrs.name,
                namespace=namespace,
            )
        decision = review_answer(self.resolver, attrs)
        status: dict[str, Any] = {"allowed": decision.allowed}
        if decision.allowed and decision.reason:
            status["reason"] = decision.reason
        if decision.evaluation_error and not decision.allowed:
            status["evaluationError"] = decision.evaluation_error
        meta = dict(body.get("metadata") or {})
        return {
            "kind": self.info.kind,
            "apiVersion": self.info.api_version,
            "metadata": meta,
            "spec": spec,
            "status": status,
        }


class SelfSubjectAccessReviews(_Review):
    info = ResourceInfo(
        AUTHZ, "selfsubjectaccessreviews", "", "SelfSubjectAccessReview", False, verbs=("create",)
    )
    schema = object_schema(
        spec={"resourceAttributes": RESOURCE_ATTRS, "nonResourceAttributes": NON_RESOURCE_ATTRS},
        status=SAR_STATUS,
    )


class SubjectAccessReviews(_Review):
    info = ResourceInfo(
        AUTHZ, "subjectaccessreviews", "", "SubjectAccessReview", False, verbs=("create",)
    )
    schema = object_schema(spec=SAR_SPEC, status=SAR_STATUS)

    def subject(self, ctx: RequestContext, spec: dict[str, Any]) -> UserInfo:
        user = _str(spec, "user")
        groups = spec.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise bad_request("spec.groups must be a list of strings")
        if not user and not groups:
            raise invalid(
                self.info.kind,
                AUTHZ,
                "",
                [
                    FieldCause(
                        "spec.user",
                        "Invalid value: at least one of user or group must be specified",
                    )
                ],
            )
        extra = spec.get("extra") or {}
        extras = (
            {str(k): tuple(str(x) for x in v) for k, v in extra.items() if isinstance(v, list)}
            if isinstance(extra, dict)
            else {}
        )
        return UserInfo(username=user, uid=_str(spec, "uid"), groups=tuple(groups), extra=extras)


class LocalSubjectAccessReviews(SubjectAccessReviews):
    info = ResourceInfo(
        AUTHZ, "localsubjectaccessreviews", "", "LocalSubjectAccessReview", True, verbs=("create",)
    )


class SelfSubjectRulesReviews(ResourceHandler):
    info = ResourceInfo(
        AUTHZ, "selfsubjectrulesreviews", "", "SelfSubjectRulesReview", False, verbs=("create",)
    )
    schema = object_schema(
        spec={"namespace": ANY},
        status={
            "resourceRules": ANY,
            "nonResourceRules": ANY,
            "incomplete": ANY,
            "evaluationError": ANY,
        },
    )

    def __init__(self, resolver: RuleResolver) -> None:
        self.resolver = resolver

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        review = self.resolver.rules_review(ctx.user, _str(spec, "namespace"))
        status: dict[str, Any] = {
            "resourceRules": [r.to_json() for r in review.resource_rules],
            "nonResourceRules": [r.to_json() for r in review.non_resource_rules],
            "incomplete": review.incomplete,
        }
        if review.evaluation_error:
            status["evaluationError"] = review.evaluation_error
        return {
            "kind": self.info.kind,
            "apiVersion": self.info.api_version,
            "metadata": {},
            "spec": spec,
            "status": status,
        }


class SelfSubjectReviews(ResourceHandler):
    info = ResourceInfo(
        AUTHN, "selfsubjectreviews", "", "SelfSubjectReview", False, verbs=("create",)
    )
    schema = object_schema(status={"userInfo": ANY})

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "kind": self.info.kind,
            "apiVersion": self.info.api_version,
            "metadata": {"creationTimestamp": None},
            "status": {"userInfo": user_info_json(ctx.user)},
        }


class TokenReviews(ResourceHandler):
    info = ResourceInfo(AUTHN, "tokenreviews", "", "TokenReview", False, verbs=("create",))
    schema = object_schema(spec={"token": ANY, "audiences": ANY}, status=ANY)

    def __init__(self, authn: Authenticator) -> None:
        self.authn = authn

    def create(self, ctx: RequestContext, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        token = _str(spec, "token")
        if not token:
            raise invalid(
                self.info.kind,
                AUTHN,
                "",
                [FieldCause("spec.token", "Required value", "FieldValueRequired")],
            )
        wanted = spec.get("audiences") or []
        if not isinstance(wanted, list) or not all(isinstance(a, str) for a in wanted):
            raise bad_request("spec.audiences must be a list of strings")
        try:
            status = self._review(token, wanted)
        except Unauthenticated as exc:
            status = {"authenticated": False, "error": str(exc)}
        return {
            "kind": self.info.kind,
            "apiVersion": self.info.api_version,
            "metadata": {},
            "spec": {k: v for k, v in spec.items() if k != "token"},
            "status": status,
        }

    def _review(self, token: str, wanted: list[str]) -> dict[str, Any]:
        """kube's TokenReview: the token must be meant for one of the audiences the caller
        names (ours when it names none), so a service asking about its own audience is
        not told that a token issued for this registry is good for it."""
        user = with_derived_groups(self.authn.authenticate_token(token))
        held = self.authn.token_audiences(token)
        matched = [a for a in wanted or [self.authn.audience] if a in held]
        if not matched:
            raise Unauthenticated("token audiences are invalid for the target audiences")
        return {"authenticated": True, "user": user_info_json(user), "audiences": matched}
