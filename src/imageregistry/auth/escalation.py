"""Privilege-escalation check: may someone holding `owner` rules grant `requested` rules?

Kubernetes refuses to let a user create or update a Role or a binding that grants more than
the user already holds (unless they have `escalate`/`bind`), which is what stops a namespace
admin from binding `cluster-admin`. The check splits every requested rule into atomic units,
one (verb, API group, resource, resource name) or (verb, URL) each, and requires each unit to
be covered by a single owner rule. A `*` in a request is just a literal value here, so it is
covered only by `*` in an owner rule: holding every verb one by one does not cover `*`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from .identity import UserInfo
from .rbac import ALL, PolicyRule, url_pattern_matches


def _atomic(rule: PolicyRule) -> Iterator[PolicyRule]:
    for verb in rule.verbs:
        for group in rule.api_groups:
            for resource in rule.resources:
                for name in rule.resource_names or ("",):
                    yield PolicyRule(
                        verbs=(verb,),
                        api_groups=(group,),
                        resources=(resource,),
                        resource_names=(name,) if name else (),
                    )
        for url in rule.non_resource_urls:
            yield PolicyRule(verbs=(verb,), non_resource_urls=(url,))


def _resource_covered(owned: Sequence[str], requested: str) -> bool:
    if ALL in owned or requested in owned:
        return True
    base, sep, sub = requested.partition("/")
    if not sep or ALL in (base, sub):
        # A requested `*/sub` or `res/*` spans many subresources; only an equal or wider
        # pattern covers it (handled above). An owned `*/*` matches the subresource
        # literally named `*` only, so it must not cover `res/*` or `*/sub`.
        return False
    # `*/sub` covers `x/sub`; our `res/*` extension covers `res/x`.
    return f"{ALL}/{sub}" in owned or f"{base}/{ALL}" in owned


def _covers_unit(owner: PolicyRule, unit: PolicyRule) -> bool:
    verb = unit.verbs[0]
    if ALL not in owner.verbs and verb not in owner.verbs:
        return False
    if unit.non_resource_urls:
        # Pattern semantics make this right for requested prefixes too: `/apis/*` is
        # covered by `/apis/*`, `/a*` or `*`, never by an exact `/apis/x`.
        return any(
            url_pattern_matches(p, unit.non_resource_urls[0]) for p in owner.non_resource_urls
        )
    group = unit.api_groups[0]
    if ALL not in owner.api_groups and group not in owner.api_groups:
        return False
    if not _resource_covered(owner.resources, unit.resources[0]):
        return False
    if not owner.resource_names:
        return True
    return bool(unit.resource_names) and unit.resource_names[0] in owner.resource_names


def covers(
    owner_rules: Iterable[PolicyRule], requested_rules: Iterable[PolicyRule]
) -> tuple[bool, list[PolicyRule]]:
    """(all covered, the atomic requested rules that are not covered, in request order)."""
    owners = list(owner_rules)
    uncovered: dict[PolicyRule, None] = {}
    for rule in requested_rules:
        for unit in _atomic(rule):
            if not any(_covers_unit(o, unit) for o in owners):
                uncovered[unit] = None
    return not uncovered, list(uncovered)


def _format_rule(rule: PolicyRule) -> str:
    def q(values: Sequence[str]) -> str:
        return "[" + " ".join(f'"{v}"' for v in values) + "]"

    if rule.non_resource_urls:
        return f"{{NonResourceURLs:{q(rule.non_resource_urls)}, Verbs:{q(rule.verbs)}}}"
    names = f", ResourceNames:{q(rule.resource_names)}" if rule.resource_names else ""
    return (
        f"{{APIGroups:{q(rule.api_groups)}, Resources:{q(rule.resources)}{names}, "
        f"Verbs:{q(rule.verbs)}}}"
    )


def escalation_message(user: UserInfo, uncovered: Sequence[PolicyRule]) -> str:
    """The Forbidden text kube-apiserver gives for an escalation attempt (same wording)."""
    groups = " ".join(f'"{g}"' for g in user.groups)
    lines = "\n".join(_format_rule(r) for r in uncovered)
    return (
        f'user "{user.username}" (groups=[{groups}]) is attempting to grant RBAC permissions '
        f"not currently held:\n{lines}"
    )
