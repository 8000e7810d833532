"""`PUT/PATCH imagestreams/<name>/status`: edit a stream's tag history through its status.

`status.tags[].items[]` is rendered from `tag_events` (newest first). An update may drop
whole tags, drop history items, and put a new current image on top of a tag (items[0] naming
an image the registry stores) — what an image pruner and `update imagestreams/status`
clients need. Anything else (reordering, inventing older history, changing
`dockerImageRepository`) is refused with 422 naming the field, because the history is the
registry's record of pushes. A new current image must be one the caller can already pull
(`image_access.require_image_access`, checked by the caller). Items are matched to events in
order by `image` (and `created` when given), so a kept item keeps its original time.
`plan_status` is pure; `StatusPlan` is what the caller applies in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imageregistry.apiserver.status import FieldCause


@dataclass(frozen=True)
class TagEvent:
    id: int
    tag: str
    digest: str
    created: str | None


@dataclass(frozen=True)
class NewCurrent:
    tag: str
    digest: str


@dataclass(frozen=True)
class StatusPlan:
    delete_ids: tuple[int, ...]
    new_current: tuple[NewCurrent, ...]
    causes: tuple[FieldCause, ...]

    @property
    def changes(self) -> bool:
        return bool(self.delete_ids or self.new_current)


def _cause(path: str, message: str) -> FieldCause:
    return FieldCause(path, f"Invalid value: {message}")


def _desired_tags(
    status: Any, causes: list[FieldCause]
) -> dict[str, tuple[int, list[dict[str, Any]]]]:
    tags = status.get("tags") if isinstance(status, dict) else None
    if tags is None:
        return {}
    if not isinstance(tags, list):
        causes.append(_cause("status.tags", "must be a list"))
        return {}
    out: dict[str, tuple[int, list[dict[str, Any]]]] = {}
    for i, entry in enumerate(tags):
        name = entry.get("tag") if isinstance(entry, dict) else None
        items = entry.get("items") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or name in out:
            causes.append(_cause(f"status.tags[{i}].tag", "must be a unique, non-empty string"))
            continue
        if items is None:
            items = []
        if not isinstance(items, list) or not all(
            isinstance(it, dict) and isinstance(it.get("image"), str) for it in items
        ):
            causes.append(_cause(f"status.tags[{i}].items", "each item needs an image"))
            continue
        out[name] = (i, items)
    return out


def _subsequence(items: Sequence[dict[str, Any]], events: Sequence[TagEvent]) -> list[int] | int:
    """Ids of the events the items name, in order; or the index of the first item that has
    no later matching event."""
    kept: list[int] = []
    position = 0
    for i, item in enumerate(items):
        for j in range(position, len(events)):
            event = events[j]
            if event.digest == item["image"] and item.get("created") in (None, event.created):
                kept.append(event.id)
                position = j + 1
                break
        else:
            return i
    return kept


def _match_tag(
    path: str,
    tag: str,
    items: Sequence[dict[str, Any]],
    events: Sequence[TagEvent],
    causes: list[FieldCause],
) -> tuple[list[int], list[NewCurrent]]:
    """Keep the events the items name (in order) and delete the rest; failing that, items[0]
    is a new current image on top of the history the other items name."""
    new: list[NewCurrent] = []
    kept = _subsequence(items, events)
    if isinstance(kept, int) and items:
        rest = _subsequence(items[1:], events)
        if isinstance(rest, int):
            kept = rest + 1
        else:
            kept, new = rest, [NewCurrent(tag, items[0]["image"])]
    if isinstance(kept, int):
        causes.append(
            _cause(
                f"{path}.items[{kept}]",
                "only items already in the tag's history, in their order, may follow the "
                "first item (history can be dropped or a new current image added, not "
                "rewritten)",
            )
        )
        return [], []
    return [e.id for e in events if e.id not in set(kept)], new


def plan_status(current: dict[str, list[TagEvent]], status: Any, repository: str) -> StatusPlan:
    """What to delete and record so the stream's history equals `status` (or why not)."""
    causes: list[FieldCause] = []
    if not isinstance(status, dict):
        return StatusPlan((), (), (_cause("status", "must be an object"),))
    given_repo = status.get("dockerImageRepository")
    if given_repo not in (None, "", repository):
        causes.append(_cause("status.dockerImageRepository", f"must be {repository!r}"))
    desired = _desired_tags(status, causes)
    delete_ids: list[int] = []
    new: list[NewCurrent] = []
    for tag, events in current.items():
        if tag not in desired:
            delete_ids.extend(e.id for e in events)
    for tag, (index, items) in desired.items():
        dropped, added = _match_tag(
            f"status.tags[{index}]", tag, items, current.get(tag, []), causes
        )
        delete_ids.extend(dropped)
        new.extend(added)
    if causes:
        return StatusPlan((), (), tuple(causes))
    return StatusPlan(tuple(sorted(delete_ids)), tuple(new), ())
