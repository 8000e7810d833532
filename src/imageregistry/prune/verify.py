"""Blob verification: re-hash stored blobs, report the damaged ones, optionally mark them.

`verify_page` checks one page of blob rows in digest order, starting after a continue
token, so a long run over a large store is a series of bounded requests the client can
stop and resume (`ac adm registry verify --continue TOKEN`). Each blob is hashed through
the driver (`BlobStore.hash_blob`) and compared with its name and recorded size. The
findings are the plan; marking is the action, taken only when asked (`confirm`) and
re-checked right before, so a blob repaired by a push while the page ran is not marked.

A mark is the `corrupt` blob state: pulls then answer `BLOB_UNKNOWN` saying the blob is
damaged, and the next upload of the same digest replaces the stored bytes and clears it
(docs/operations.md, "Verifying stored blobs"). A marked blob that hashes correctly again
(restored from a backup) is reported as intact and, when confirmed, unmarked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from imageregistry.content.digest import Digest
from imageregistry.metadata.gc_queries import RecordedBlob
from imageregistry.storage.driver import BlobStore
from imageregistry.storage.errors import BlobNotFound

DEFAULT_PAGE = 100
MAX_PAGE = 10_000
PAGE_BYTES = 1 << 30  # a page ends after the blob that crosses this many hashed bytes


class BlobChecks(Protocol):
    def page(self, after: str, limit: int) -> list[RecordedBlob]: ...

    def totals(self) -> tuple[int, int]: ...

    def set_corrupt(self, digest: str, size: int, corrupt: bool) -> bool: ...


@dataclass(frozen=True, slots=True)
class Finding:
    """One blob whose stored bytes do not match its digest and recorded size (or, with
    `intact`, a marked blob that matches again)."""

    digest: str
    size: int  # recorded
    stored_size: int | None  # None: the stored bytes are missing
    actual: str | None  # what the stored bytes hash to
    intact: bool = False
    marked: bool = False  # the state changed by this run (corrupt, or back to present)

    @property
    def problem(self) -> str:
        if self.intact:
            return "intact again"
        if self.stored_size is None:
            return "missing from storage"
        if self.stored_size != self.size:
            return f"{self.stored_size} bytes stored, {self.size} recorded"
        return f"content hashes to {self.actual}"


@dataclass(frozen=True)
class VerifyPage:
    dry_run: bool
    checked: int
    checked_bytes: int
    findings: list[Finding] = field(default_factory=list)
    next_token: str = ""  # "" once every blob was checked
    total_count: int = 0
    total_bytes: int = 0


async def _check(blobs: BlobStore, row: RecordedBlob) -> Finding | None:
    digest = Digest.parse(row.digest)
    try:
        found = await blobs.hash_blob(digest)
    except BlobNotFound:
        stored: tuple[int | None, str | None] = (None, None)
    else:
        stored = (found.size, str(found.digest))
    intact = stored == (row.size, row.digest)
    if intact != row.corrupt:
        return None  # as recorded: intact and present, or damaged and already marked
    return Finding(row.digest, row.size, stored[0], stored[1], intact=intact)


async def verify_page(
    checks: BlobChecks,
    blobs: BlobStore,
    after: str,
    limit: int,
    confirm: bool,
    page_bytes: int = PAGE_BYTES,
) -> VerifyPage:
    """Check the blobs after `after` (at most `limit`, stopping past `page_bytes`)."""
    count, total = checks.totals()
    rows = checks.page(after, limit)
    findings: list[Finding] = []
    checked = checked_bytes = 0
    for row in rows:
        finding = await _check(blobs, row)
        checked += 1
        checked_bytes += row.size
        if finding is not None:
            findings.append(finding)
        if checked_bytes >= page_bytes:
            break
    if confirm:
        findings = [await _mark(checks, blobs, f) for f in findings]
    more = checked < len(rows) or len(rows) == limit
    next_token = rows[checked - 1].digest if rows and more else ""
    return VerifyPage(not confirm, checked, checked_bytes, findings, next_token, count, total)


async def _mark(checks: BlobChecks, blobs: BlobStore, finding: Finding) -> Finding:
    # Hash again right before marking: a push may have repaired the blob meanwhile.
    row = RecordedBlob(finding.digest, finding.size, corrupt=finding.intact)
    again = await _check(blobs, row)
    if again is None or again.intact != finding.intact:
        return finding
    changed = checks.set_corrupt(finding.digest, finding.size, not finding.intact)
    return Finding(
        again.digest, again.size, again.stored_size, again.actual, again.intact, marked=changed
    )
