"""Entity tags of registry content and the `If-None-Match` check (RFC 9110 §8.8.3, §13.1.2).

Blobs and manifests are content-addressed, so their entity tag is simply the quoted
digest: strong, identical on every replica, and known before any byte is read. A GET or
HEAD whose `If-None-Match` names it (weak comparison) or is `*` answers 304 with no body.
"""

from __future__ import annotations


def digest_etag(digest: str) -> str:
    return f'"{digest}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an `If-None-Match` field value names ``etag`` or is `*`."""
    if if_none_match is None:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False
