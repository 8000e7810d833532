"""Immutable tags: the SQL every tag-moving or tag-removing write runs before it changes
anything, in its own transaction (docs/operations.md, "Immutable tags").

`ImageTagPolicy` objects live in the generic `objects` table; their rules are parsed with
`tagpolicy.rules`. Each write path calls one function here with what it is about to do:
a push, mapping or `tag.from` that moves a tag (`check_move`), the removal of a tag
(`check_tag_removal`), of every tag pointing at an image (`check_image_removal`), of a
whole stream (`check_stream_removal`), or a rewrite of a stream's history (`check_rewrite`).
A tag that does not exist yet may always be created; a tag pointed at the same image again
is no change (an identical re-push succeeds). `TagImmutable` names the policy.

Ordering against a policy written at the same time: on SQLite every write transaction
holds the database's one writer lock, so a check sees every committed policy and nothing
commits in between. On PostgreSQL a check first takes a shared transaction-scoped advisory
lock on the namespace, and a policy write takes the same lock exclusively
(`lock_for_policy_write`): once `kubectl create imagetagpolicy` has answered, every tag
write that checked without seeing the policy has committed, and every later one sees it.
Writes that move no existing tag (new tags, identical re-pushes) take no lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, func, select, text

from imageregistry import apigroups
from imageregistry.metadata.tables import objects, repositories, tag_events
from imageregistry.tagpolicy.rules import ImmutableRule, first_match, parse_policy

POLICIES = f"imagetagpolicies.{apigroups.IMAGE}"
POLICY_KIND = "ImageTagPolicy"


class TagImmutable(Exception):
    """A write would move or remove a tag an `ImageTagPolicy` makes immutable."""

    def __init__(self, namespace: str, stream: str, tag: str, policy: str) -> None:
        where = f"{namespace}/{stream}"
        super().__init__(f'tag {tag} of {where} is immutable by {POLICY_KIND} "{policy}"')
        self.namespace = namespace
        self.stream = stream
        self.tag = tag
        self.policy = policy


@dataclass(frozen=True, slots=True)
class ImmutableTag:
    """A tag that exists and is immutable, with its current image (for prune)."""

    namespace: str
    stream: str
    tag: str
    digest: str
    policy: str


def _lock(conn: Connection, namespace: str, *, exclusive: bool) -> None:
    if conn.dialect.name != "postgresql":
        return  # SQLite: the write transaction already holds the only writer lock
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    conn.execute(text(f"SELECT {function}(hashtext(:key))"), {"key": f"imagetagpolicy:{namespace}"})


def lock_for_policy_write(conn: Connection, namespace: str) -> None:
    """Taken first by every create, update and delete of a policy in `namespace`."""
    _lock(conn, namespace, exclusive=True)


def namespace_rules(conn: Connection, namespace: str) -> list[ImmutableRule]:
    """The rules of every policy of the namespace, by policy name (written policies were
    validated; one that no longer parses protects nothing rather than failing writes)."""
    rows = conn.execute(
        select(objects.c.name, objects.c.body)
        .where(objects.c.resource == POLICIES, objects.c.namespace == namespace)
        .order_by(objects.c.name)
    ).all()
    rules: list[ImmutableRule] = []
    for row in rows:
        parsed, _ = parse_policy(row.name, dict(row.body).get("spec"))
        rules.extend(parsed)
    return rules


def _refuse(
    conn: Connection, namespace: str, stream: str, tags: Iterable[str], *, locked: bool = False
) -> None:
    wanted = sorted(set(tags))
    if not wanted:
        return
    if not locked:
        _lock(conn, namespace, exclusive=False)
    rules = namespace_rules(conn, namespace)
    for tag in wanted:
        rule = first_match(rules, stream, tag)
        if rule is not None:
            raise TagImmutable(namespace, stream, tag, rule.policy)


def check_move(
    conn: Connection, namespace: str, stream: str, tag: str, current: str | None, new: str
) -> None:
    """Before pointing `tag` (now at `current`, None = no such tag) at image `new`."""
    if current is not None and current != new:
        _refuse(conn, namespace, stream, [tag])


def current_tags(conn: Connection, repo_id: int) -> dict[str, str]:
    """Every tag of a stream and its current image (the newest history item)."""
    newest = (
        select(func.max(tag_events.c.id))
        .where(tag_events.c.repository_id == repo_id)
        .group_by(tag_events.c.tag)
    )
    rows = conn.execute(
        select(tag_events.c.tag, tag_events.c.digest).where(tag_events.c.id.in_(newest))
    ).all()
    return {str(r.tag): str(r.digest) for r in rows}


def check_tag_removal(conn: Connection, namespace: str, stream: str, tag: str) -> None:
    """Before deleting `tag` and its history (ImageStreamTag delete, OCI DELETE by tag)."""
    _refuse(conn, namespace, stream, [tag])


def check_stream_removal(conn: Connection, namespace: str, stream: str, repo_id: int) -> None:
    """Before deleting a whole image stream: refused while it holds an immutable tag."""
    _refuse(conn, namespace, stream, current_tags(conn, repo_id))


def check_rewrite(
    conn: Connection,
    namespace: str,
    stream: str,
    before: Mapping[str, str],
    after: Mapping[str, str],
) -> None:
    """After a history rewrite inside the transaction (`after` = `current_tags` now):
    refused when a tag that existed points elsewhere or is gone."""
    _refuse(conn, namespace, stream, [t for t, d in before.items() if after.get(t) != d])


def check_image_removal(conn: Connection, digest: str, repo_id: int | None = None) -> None:
    """Before removing image `digest` from one stream (`repo_id`) or from every stream:
    refused while an immutable tag there points at it (older history items may go).
    The tags whose history holds the image come from the digest index; each is then
    checked for being current with one lookup on (stream, tag, id)."""
    query = (
        select(tag_events.c.repository_id, tag_events.c.tag)
        .where(tag_events.c.digest == digest)
        .distinct()
    )
    if repo_id is not None:
        query = query.where(tag_events.c.repository_id == repo_id)
    by_stream: dict[int, list[str]] = {}
    for row in conn.execute(query).all():
        newest = conn.execute(
            select(tag_events.c.digest)
            .where(tag_events.c.repository_id == row.repository_id, tag_events.c.tag == row.tag)
            .order_by(tag_events.c.id.desc())
            .limit(1)
        ).scalar()
        if newest == digest:
            by_stream.setdefault(int(row.repository_id), []).append(str(row.tag))
    for stream_id, tags in sorted(by_stream.items()):
        stream = conn.execute(
            select(repositories.c.namespace, repositories.c.name).where(
                repositories.c.id == stream_id
            )
        ).one()
        _refuse(conn, stream.namespace, stream.name, tags)


def immutable_tags(conn: Connection) -> list[ImmutableTag]:
    """Every existing immutable tag with its current image: prune keeps these images."""
    namespaces = [
        str(ns)
        for ns in conn.execute(
            select(objects.c.namespace).where(objects.c.resource == POLICIES).distinct()
        ).scalars()
    ]
    out: list[ImmutableTag] = []
    for namespace in sorted(namespaces):
        rules = namespace_rules(conn, namespace)
        if not rules:
            continue
        streams = conn.execute(
            select(repositories.c.id, repositories.c.name).where(
                repositories.c.namespace == namespace
            )
        ).all()
        for stream in streams:
            for tag, digest in sorted(current_tags(conn, stream.id).items()):
                rule = first_match(rules, stream.name, tag)
                if rule is not None:
                    out.append(ImmutableTag(namespace, stream.name, tag, digest, rule.policy))
    return out
