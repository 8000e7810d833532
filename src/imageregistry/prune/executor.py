"""Apply a `PrunePlan` through deleter protocols; a dry run uses describing deleters.

Plan first, act second (docs/architecture.md#plans-then-actions): the plan is a value; this module
walks it, stream history items first (so no history still points at an image when the
image goes), then images. A step that fails is recorded and the walk goes on, so one
broken object never stops the rest of the cleanup; the caller turns any failure into a
non-zero exit. The dry run is exactly the same walk with deleters that only describe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from imageregistry.metadata.prune_records import StreamPrune
from imageregistry.prune.planner import PrunePlan


class TagEventDeleter(Protocol):
    def delete_tag_events(self, stream: StreamPrune) -> None:
        """Remove the plan's history items from one stream (raise on failure)."""


class ImageDeleter(Protocol):
    def delete_image(self, digest: str) -> None:
        """Delete one Image object (raise on failure)."""


@dataclass(frozen=True)
class Step:
    kind: str  # "imagestream" | "image"
    target: str  # ns/stream or image digest
    description: str
    count: int = 1  # history items for a stream step
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class PruneResult:
    steps: tuple[Step, ...]
    dry_run: bool

    @property
    def failures(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if not s.ok)

    def summary(self) -> str:
        images = sum(1 for s in self.steps if s.ok and s.kind == "image")
        items = sum(s.count for s in self.steps if s.ok and s.kind == "imagestream")
        streams = sum(1 for s in self.steps if s.ok and s.kind == "imagestream")
        if not images and not items:
            return "Summary: deleted 0 objects"
        return (
            f"Summary: deleted {images} image object(s), deleted {items} image stream tag "
            f"item(s), updated {streams} image stream(s)"
        )


class DescribingTagEventDeleter:
    """Dry run: remembers what it was asked to delete, changes nothing."""

    def __init__(self) -> None:
        self.described: list[str] = []

    def delete_tag_events(self, stream: StreamPrune) -> None:
        self.described.append(stream.path)


class DescribingImageDeleter:
    def __init__(self) -> None:
        self.described: list[str] = []

    def delete_image(self, digest: str) -> None:
        self.described.append(digest)


def _run(step: Step, action: Callable[[], None]) -> Step:
    try:
        action()
    except Exception as exc:  # one failed step must not stop the others
        return Step(step.kind, step.target, step.description, step.count, str(exc) or repr(exc))
    return step


def execute_prune(
    plan: PrunePlan,
    tags: TagEventDeleter,
    images: ImageDeleter,
    dry_run: bool,
    progress: Callable[[Step], None] | None = None,
) -> PruneResult:
    steps: list[Step] = []
    for stream in plan.streams:
        step = Step(
            "imagestream",
            stream.path,
            f"Deleting {len(stream.events)} items from image stream {stream.path}",
            len(stream.events),
        )
        steps.append(_run(step, lambda s=stream: tags.delete_tag_events(s)))  # type: ignore[misc]
        if progress:
            progress(steps[-1])
    for digest in plan.images:
        step = Step("image", digest, f"Deleting image {digest}")
        steps.append(_run(step, lambda d=digest: images.delete_image(d)))  # type: ignore[misc]
        if progress:
            progress(steps[-1])
    return PruneResult(tuple(steps), dry_run)
