"""The rules of an `ImageTagPolicy`: parse and validate its spec, match streams and tags.

`spec.immutableTags` is a list of rules `{imageStreams: [glob, ...], tags: [glob, ...]}`;
a tag is immutable when one rule has a stream pattern matching the image stream's name
and a tag pattern matching the tag. Patterns are shell globs (`*` any run of characters,
`/` included; `?` one character; `[a-z]`, `[!0-9]` one character of, or not of, a set),
matched case-sensitively against the whole name. A pattern that could never match a
valid stream or tag name (a character those names cannot hold, an unclosed or empty
`[...]`) is refused when the policy is written, so a typo cannot silently protect nothing.

This module is pure and imports nothing of the project: the metadata layer runs the
matching inside the transaction that would move or delete a tag (`metadata.tag_policies`),
and the API validates policies with the same parser (`apiserver.imagetagpolicy`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_PATTERN = 255
MAX_RULES = 100
MAX_PATTERNS = 100
# Characters a stream name (lowercase components joined by `/`) or a tag can hold.
_STREAM_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-/")
_TAG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class Cause:
    """One reason a spec is invalid: the field path and kube-style message."""

    field: str
    message: str


@dataclass(frozen=True)
class ImmutableRule:
    """One `spec.immutableTags[]` entry of the policy named `policy`."""

    policy: str
    streams: tuple[str, ...]
    tags: tuple[str, ...]
    _stream_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _tag_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_stream_re", _compile(self.streams))
        object.__setattr__(self, "_tag_re", _compile(self.tags))

    def matches(self, stream: str, tag: str) -> bool:
        return bool(self._stream_re.match(stream) and self._tag_re.match(tag))


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex for any of the globs; `(?!)` (never matches) when there are none."""
    parts = [fnmatch.translate(p) for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts) or "(?!)")


def glob_problem(pattern: str, allowed: frozenset[str]) -> str | None:
    """Why `pattern` is not a glob over names made of `allowed` characters, or None."""
    if not pattern:
        return "must not be empty"
    if len(pattern) > MAX_PATTERN:
        return f"must be no more than {MAX_PATTERN} characters"
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                return f"unclosed '[' at position {i}"
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = body[1:]
            if not body:
                return f"empty character set at position {i}"
            if "[" in body:
                return f"'[' inside a character set at position {i}"
            bad = sorted(set(body) - allowed - {"-"})
            if bad:
                return f"character set at position {i} holds {bad[0]!r}, which names cannot"
            i = end + 1
            continue
        if char == "]":
            return f"unmatched ']' at position {i}"
        if char not in allowed and char not in "*?":
            return f"{char!r} at position {i} cannot appear in a name"
        i += 1
    return None


def _patterns(value: object, where: str, allowed: frozenset[str], causes: list[Cause]) -> list[str]:
    if not isinstance(value, list) or not value:
        causes.append(Cause(where, "Required value: a non-empty list of glob patterns"))
        return []
    if len(value) > MAX_PATTERNS:
        causes.append(Cause(where, f"Too many: {len(value)}: must have at most {MAX_PATTERNS}"))
        return []
    out: list[str] = []
    for i, pattern in enumerate(value):
        if not isinstance(pattern, str):
            causes.append(Cause(f"{where}[{i}]", "Invalid value: must be a string"))
            continue
        problem = glob_problem(pattern, allowed)
        if problem is not None:
            causes.append(Cause(f"{where}[{i}]", f'Invalid value: "{pattern}": {problem}'))
            continue
        out.append(pattern)
    return out


def parse_policy(name: str, spec: object) -> tuple[list[ImmutableRule], list[Cause]]:
    """The rules of policy `name` and the reasons its spec is invalid (rules only when none)."""
    if not isinstance(spec, dict):
        return [], [Cause("spec", "Required value: must be an object")]
    causes: list[Cause] = []
    unknown = sorted(set(spec) - {"immutableTags"})
    for key in unknown:
        causes.append(Cause(f"spec.{key}", "Unsupported value: only immutableTags is known"))
    entries = spec.get("immutableTags")
    if not isinstance(entries, list) or not entries:
        causes.append(Cause("spec.immutableTags", "Required value: a non-empty list of rules"))
        return [], causes
    if len(entries) > MAX_RULES:
        causes.append(
            Cause("spec.immutableTags", f"Too many: {len(entries)}: must have at most {MAX_RULES}")
        )
        return [], causes
    rules: list[ImmutableRule] = []
    for i, entry in enumerate(entries):
        where = f"spec.immutableTags[{i}]"
        if not isinstance(entry, dict):
            causes.append(Cause(where, "Invalid value: must be an object"))
            continue
        for key in sorted(set(entry) - {"imageStreams", "tags"}):
            causes.append(
                Cause(f"{where}.{key}", "Unsupported value: only imageStreams and tags are known")
            )
        streams = _patterns(
            entry.get("imageStreams"), f"{where}.imageStreams", _STREAM_CHARS, causes
        )
        tags = _patterns(entry.get("tags"), f"{where}.tags", _TAG_CHARS, causes)
        if streams and tags:
            rules.append(ImmutableRule(name, tuple(streams), tuple(tags)))
    return ([] if causes else rules), causes


def first_match(rules: Iterable[ImmutableRule], stream: str, tag: str) -> ImmutableRule | None:
    """The first rule that makes `stream:tag` immutable (rules come sorted by policy name)."""
    return next((r for r in rules if r.matches(stream, tag)), None)
