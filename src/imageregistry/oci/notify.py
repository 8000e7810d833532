"""The `/v2/` handlers' side of event notifications (`notifications.notifier`).

Each function builds the events of one request and returns the hook its metadata write
runs in its transaction (None, costing nothing, when no endpoint is configured); pulls,
which write nothing, go to the notifier's buffer instead. Event kinds and fields are
distribution's (docs/operations.md, "Event notifications").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from imageregistry.auth.identity import UserInfo
from imageregistry.metadata.outbox import Emit
from imageregistry.metadata.registry import RepoKey, current_tag_digest
from imageregistry.metadata.registry_manifests import DeletedManifest
from imageregistry.notifications.notifier import Notifier


async def settle_pulls(notifier: Notifier | None) -> None:
    """Queue this process's buffered pull events before a write queues its own, so a pull
    served before a push or delete reaches the endpoints before it."""
    if notifier is not None and notifier.has_pulls:
        await run_in_threadpool(notifier.flush_pulls)


def manifest_pushed(
    notifier: Notifier | None,
    scope: Mapping[str, Any],
    user: UserInfo,
    repo: RepoKey,
    digest: str,
    media_type: str,
    size: int,
    tag: str | None,
) -> Emit | None:
    if notifier is None:
        return None
    events = notifier.factory(scope, user)
    return notifier.emit([events.manifest("push", str(repo), digest, media_type, size, tag)])


def manifest_pulled(
    notifier: Notifier | None,
    scope: Mapping[str, Any],
    user: UserInfo | None,
    repo: RepoKey,
    digest: str,
    media_type: str,
    size: int,
    tag: str | None,
) -> None:
    if notifier is None or not notifier.wants_pulls:
        return
    events = notifier.factory(scope, user)
    notifier.pulled(events.manifest("pull", str(repo), digest, media_type, size, tag))


def manifest_deleted(
    notifier: Notifier | None, scope: Mapping[str, Any], user: UserInfo, repo: RepoKey
) -> Callable[[Connection, DeletedManifest], None] | None:
    """The manifest, then each tag that went with it (distribution 2.8 deletes the tags
    of a manifest deleted by digest and reports each; here a tag whose history still
    holds another image stays, pointing at it, and is not reported)."""
    if notifier is None:
        return None
    events = notifier.factory(scope, user)

    def emit(conn: Connection, deleted: DeletedManifest) -> None:
        name = str(repo)
        found = [events.deleted(name, digest=deleted.digest)]
        found += [
            events.deleted(name, tag=tag)
            for tag in deleted.tags
            if current_tag_digest(conn, repo, tag) is None
        ]
        notifier.write(conn, found)

    return emit


def deleted(
    notifier: Notifier | None,
    scope: Mapping[str, Any],
    user: UserInfo,
    repo: RepoKey,
    *,
    tag: str = "",
    digest: str = "",
) -> Emit | None:
    """A tag or a blob deleted: one `delete` event naming just that (a deleted manifest
    reports its tags too, `manifest_deleted`)."""
    if notifier is None:
        return None
    return notifier.emit([notifier.factory(scope, user).deleted(str(repo), tag=tag, digest=digest)])


def blob_pushed(
    notifier: Notifier | None,
    scope: Mapping[str, Any],
    user: UserInfo,
    repo: RepoKey,
    digest: str,
    size: int,
) -> Emit | None:
    if notifier is None:
        return None
    return notifier.emit([notifier.factory(scope, user).blob("push", str(repo), digest, size)])


def blob_mounted(
    notifier: Notifier | None,
    scope: Mapping[str, Any],
    user: UserInfo,
    repo: RepoKey,
    digest: str,
    source: RepoKey,
) -> Callable[[Connection, int], None] | None:
    if notifier is None:
        return None
    events = notifier.factory(scope, user)

    def emit(conn: Connection, size: int) -> None:
        notifier.write(conn, [events.blob("mount", str(repo), digest, size, str(source))])

    return emit


def blob_pulled(
    notifier: Notifier | None,
    scope: Mapping[str, Any],
    user: UserInfo,
    repo: RepoKey,
    digest: str,
    size: int,
) -> None:
    if notifier is None or not notifier.wants_pulls:
        return
    notifier.pulled(notifier.factory(scope, user).blob("pull", str(repo), digest, size))
