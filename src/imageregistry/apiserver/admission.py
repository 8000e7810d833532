"""The extra access reviews some handlers ask after the dispatcher has authorized the request.

A request's own authorization happens in one place, the API dispatcher (`api_dispatch.py`),
from the action its route declares. A handler never decides whether its request may run.
A few Kubernetes rules still need a second question about the caller or about another
subject. These are admission steps, not request authorization. Each one calls this module
by name, so `authorize(` appears in `apiserver/` only here and in the dispatcher's
authentication and authorization steps (`request_context.py`):

- RBAC escalation prevention (`resources/rbac.py`). Writing a Role or ClusterRole with
  rules the caller does not hold needs `escalate` on it. Binding a role needs `bind` on the
  role, or else the caller must hold every permission the role grants.
- Image access (`resources/image_access.py`). Making a stream reference an image needs the
  right to pull that image already: `get images`, or `get imagestreams/layers` where the
  image comes from.
- A confirmed prune with `pruneRegistry` also runs registry GC, so it needs
  `create registrygcs` (`prune.py`).
- The answers of SubjectAccessReview, LocalSubjectAccessReview and SelfSubjectAccessReview
  (`resources/reviews.py`, `review_answer`). That review's question is its content: the
  subject's access, evaluated by the local RBAC resolver.

A denial here is a 403 the handler words itself, or, for a review, the review's `status`.
"""

from __future__ import annotations

from imageregistry.auth.authorizer import Authorizer
from imageregistry.auth.identity import Attributes, UserInfo
from imageregistry.auth.resolver import Decision, RuleResolver


def admission_allows(
    authorizer: Authorizer,
    user: UserInfo,
    verb: str,
    group: str,
    resource: str,
    *,
    subresource: str = "",
    name: str = "",
    namespace: str = "",
) -> bool:
    """Whether `user` may `verb` the resource: an admission step's review (module docstring)."""
    attrs = Attributes.for_resource(
        user, verb, group, resource, subresource=subresource, name=name, namespace=namespace
    )
    return authorizer.authorize(attrs).allowed


def review_answer(resolver: RuleResolver, attrs: Attributes) -> Decision:
    """The `status` an access review reports about its subject (not about the caller)."""
    return resolver.authorize(attrs)
