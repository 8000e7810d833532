"""The audit policy: Kubernetes' own `audit.k8s.io/v1` `Policy`, read once at start.

The file is what kube-apiserver's `--audit-policy-file` takes: `rules` (required, the
first matching rule decides), each with a `level` (`None`, `Metadata`, `Request`,
`RequestResponse`) and optional `users`, `userGroups`, `verbs`, `resources` (`group`,
`resources` with `pods/log`, `*`, `pods/*` and `*/status` forms, `resourceNames`),
`namespaces` (`""` = cluster-scoped), `nonResourceURLs` (`*` only as the last character,
a prefix match), `omitStages` and `omitManagedFields`; top-level `omitStages` (added to
every rule's) and `omitManagedFields` (the default of the rules). Anything else — an
unknown key, a level or stage that does not exist, a wildcard in the middle of a URL, a
rule for both resources and URLs — is refused with one line naming the place, so a typo
never leaves a server auditing less than its operator wrote. A request no rule matches is
not audited (level `None`), as in Kubernetes.

Rules are compiled into frozensets and tuples, so deciding the level of a request is a few
set lookups per rule (the audit log does it for every request).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from imageregistry.auth.identity import Attributes, UserInfo
from imageregistry.configerror import ConfigurationError

API_VERSION = "audit.k8s.io/v1"
LEVELS = ("None", "Metadata", "Request", "RequestResponse")
NONE, METADATA, REQUEST, REQUEST_RESPONSE = range(4)
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
_RULE_KEYS = frozenset(
    (
        "level",
        "users",
        "userGroups",
        "verbs",
        "resources",
        "namespaces",
        "nonResourceURLs",
        "omitStages",
        "omitManagedFields",
    )
)
_POLICY_KEYS = frozenset(
    ("apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields")
)

_GROUP_KEYS = frozenset(("group", "resources", "resourceNames"))


class PolicyError(ConfigurationError):
    """The policy file cannot be used; the message names the file and the place."""


@dataclass(frozen=True)
class Outcome:
    """What the policy says about one request."""

    level: int  # index into LEVELS
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool = False

    @property
    def level_name(self) -> str:
        return LEVELS[self.level]


NOT_AUDITED = Outcome(NONE)


@dataclass(frozen=True)
class _GroupResources:
    group: str
    everything: bool  # no `resources`: every resource and subresource of the group
    exact: frozenset[str]  # "pods", "pods/log"
    all_subresources_of: frozenset[str]  # "pods/*"
    subresource_anywhere: frozenset[str]  # "*/status"
    any_resource: bool  # "*"
    names: frozenset[str]  # resourceNames; empty = every name

    def matches(self, attrs: Attributes) -> bool:
        if attrs.api_group != self.group:
            return False
        if self.everything:
            return True
        if self.names and attrs.name not in self.names:
            return False
        if self.any_resource or attrs.combined_resource in self.exact:
            return True
        sub = attrs.subresource
        return bool(sub) and (
            attrs.resource in self.all_subresources_of or sub in self.subresource_anywhere
        )


@dataclass(frozen=True)
class _Rule:
    outcome_level: int
    users: frozenset[str]
    groups: frozenset[str]
    verbs: frozenset[str]
    resources: tuple[_GroupResources, ...]
    namespaces: frozenset[str] | None
    urls: frozenset[str]
    url_prefixes: tuple[str, ...]
    omit_stages: frozenset[str]
    omit_managed_fields: bool | None

    def matches(self, user: UserInfo, attrs: Attributes) -> bool:
        if self.users and user.username not in self.users:
            return False
        if self.groups and self.groups.isdisjoint(user.groups):
            return False
        if self.verbs and attrs.verb not in self.verbs:
            return False
        has_urls = bool(self.urls or self.url_prefixes)
        if attrs.is_resource_request:
            if has_urls:
                return False
            if self.namespaces is not None and attrs.namespace not in self.namespaces:
                return False
            return not self.resources or any(g.matches(attrs) for g in self.resources)
        if self.resources or self.namespaces is not None:
            return False
        if not has_urls:
            return True
        path = attrs.path
        return path in self.urls or path.startswith(self.url_prefixes)


class Policy:
    """A parsed policy; `evaluate` gives the level and the stages to leave out."""

    def __init__(self, rules: Sequence[_Rule], omit_stages: frozenset[str], omit_managed: bool):
        self._rules = tuple(rules)
        self._outcomes = tuple(
            Outcome(
                rule.outcome_level,
                omit_stages | rule.omit_stages,
                omit_managed if rule.omit_managed_fields is None else rule.omit_managed_fields,
            )
            for rule in self._rules
        )

    @property
    def acts_early(self) -> bool:
        """Whether some request may need its level before it ends: a rule writes the
        `RequestReceived` stage or keeps bodies (level `Request` and above)."""
        return any(
            o.level >= REQUEST or (o.level and "RequestReceived" not in o.omit_stages)
            for o in self._outcomes
        )

    def evaluate(self, user: UserInfo, attrs: Attributes) -> Outcome:
        """The first matching rule's outcome; `NOT_AUDITED` when none matches. `user` is
        the caller as authenticated (before impersonation), as in kube-apiserver."""
        for rule, outcome in zip(self._rules, self._outcomes, strict=True):
            if rule.matches(user, attrs):
                return outcome
        return NOT_AUDITED


def load_policy(path: str | Path) -> Policy:
    """Read and compile the policy file, or raise `PolicyError` with one line."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PolicyError(f"audit policy file {path}: {exc.strerror}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        problem = str(exc).replace("\n", " ")
        raise PolicyError(f"audit policy file {path} is not valid YAML: {problem}") from None
    if len(documents) != 1:
        raise PolicyError(f"audit policy file {path}: expected one Policy document")
    return parse_policy(documents[0], str(path))


def parse_policy(document: Any, source: str = "audit policy") -> Policy:
    where = f"audit policy file {source}"
    if not isinstance(document, Mapping):
        raise PolicyError(f"{where}: expected a Policy mapping")
    _known_keys(document, _POLICY_KEYS, where)
    if document.get("apiVersion") != API_VERSION or document.get("kind") != "Policy":
        raise PolicyError(
            f"{where}: expected apiVersion {API_VERSION} and kind Policy, got"
            f" {document.get('apiVersion')!r} and {document.get('kind')!r}"
        )
    raw_rules = document.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise PolicyError(f"{where}: rules must be a non-empty list (no rules: nothing audited)")
    omit = _stages(document.get("omitStages"), f"{where}: omitStages")
    omit_managed = _bool(document.get("omitManagedFields"), f"{where}: omitManagedFields")
    rules = [_rule(raw, f"{where}: rules[{i}]") for i, raw in enumerate(raw_rules)]
    return Policy(rules, omit, bool(omit_managed))


def _rule(raw: Any, where: str) -> _Rule:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: expected a mapping")
    _known_keys(raw, _RULE_KEYS, where)
    level = raw.get("level")
    if level not in LEVELS:
        raise PolicyError(f"{where}.level: expected one of {', '.join(LEVELS)}, got {level!r}")
    urls = _strings(raw.get("nonResourceURLs"), f"{where}.nonResourceURLs")
    resources = raw.get("resources")
    namespaces = raw.get("namespaces")
    if urls and (resources or namespaces):
        raise PolicyError(
            f"{where}: a rule applies to resources (resources, namespaces) or to"
            " nonResourceURLs, not both"
        )
    exact: set[str] = set()
    prefixes: list[str] = []
    for i, url in enumerate(urls):
        if url != "*" and not url.startswith("/"):
            raise PolicyError(f"{where}.nonResourceURLs[{i}]: {url!r} must start with /")
        if "*" in url[:-1]:
            raise PolicyError(
                f"{where}.nonResourceURLs[{i}]: {url!r}: * is allowed only as the last character"
            )
        if url.endswith("*"):
            prefixes.append(url[:-1])
        else:
            exact.add(url)
    groups: list[_GroupResources] = []
    if resources is not None:
        if not isinstance(resources, list):
            raise PolicyError(f"{where}.resources: expected a list")
        groups = [_group(g, f"{where}.resources[{i}]") for i, g in enumerate(resources)]
    ns = None
    if namespaces is not None:
        ns = frozenset(_strings(namespaces, f"{where}.namespaces")) or None
    return _Rule(
        outcome_level=LEVELS.index(level),
        users=frozenset(_strings(raw.get("users"), f"{where}.users")),
        groups=frozenset(_strings(raw.get("userGroups"), f"{where}.userGroups")),
        verbs=frozenset(_strings(raw.get("verbs"), f"{where}.verbs")),
        resources=tuple(groups),
        namespaces=ns,
        urls=frozenset(exact),
        url_prefixes=tuple(prefixes),
        omit_stages=_stages(raw.get("omitStages"), f"{where}.omitStages"),
        omit_managed_fields=_bool(raw.get("omitManagedFields"), f"{where}.omitManagedFields"),
    )


def _group(raw: Any, where: str) -> _GroupResources:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: expected a mapping with group and resources")
    _known_keys(raw, _GROUP_KEYS, where)
    group = raw.get("group", "")
    if group is None:
        group = ""
    if not isinstance(group, str):
        raise PolicyError(f"{where}.group: expected a string")
    names = _strings(raw.get("resourceNames"), f"{where}.resourceNames")
    resources = _strings(raw.get("resources"), f"{where}.resources")
    if names and not resources:
        raise PolicyError(f"{where}: resourceNames needs resources")
    exact: set[str] = set()
    subs_of: set[str] = set()
    anywhere: set[str] = set()
    any_resource = False
    for i, res in enumerate(resources):
        parts = res.split("/")
        bad = len(parts) > 2 or not all(parts) or any("*" in p and p != "*" for p in parts)
        if bad or parts == ["*", "*"]:
            raise PolicyError(
                f"{where}.resources[{i}]: {res!r}: expected resource, resource/subresource,"
                " *, resource/* or */subresource"
            )
        if res == "*":
            any_resource = True
        elif len(parts) == 2 and parts[1] == "*":
            subs_of.add(parts[0])
        elif len(parts) == 2 and parts[0] == "*":
            anywhere.add(parts[1])
        else:
            exact.add(res)
    return _GroupResources(
        group=group,
        everything=not resources,
        exact=frozenset(exact),
        all_subresources_of=frozenset(subs_of),
        subresource_anywhere=frozenset(anywhere),
        any_resource=any_resource,
        names=frozenset(names),
    )


def _known_keys(raw: Mapping[Any, Any], known: frozenset[str], where: str) -> None:
    for key in raw:
        if key not in known:
            raise PolicyError(f"{where}: unknown field {key!r}")


def _strings(raw: Any, where: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise PolicyError(f"{where}: expected a list of strings")
    return list(raw)


def _stages(raw: Any, where: str) -> frozenset[str]:
    stages = _strings(raw, where)
    for stage in stages:
        if stage not in STAGES:
            raise PolicyError(f"{where}: expected stages of {', '.join(STAGES)}, got {stage!r}")
    return frozenset(stages)


def _bool(raw: Any, where: str) -> bool | None:
    if raw is None or isinstance(raw, bool):
        return raw
    raise PolicyError(f"{where}: expected true or false")
