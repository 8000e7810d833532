"""HTTP pieces both blob-serving ports share: byte ranges, entity tags, the blob content type.

The main port (`oci.blobs`, `oci.manifests`) and the blob port (`blobport.server`) answer
`Range` and `If-None-Match` the same way; keeping the rules here lets both import them
without importing each other.

Ranges: a single `bytes=` range (RFC 9110 §14); anything unsatisfiable or malformed is None,
which both ports answer 416. Entity tags: blobs and manifests are content-addressed, so their
tag is the quoted digest: strong, identical on every replica, and known before any byte is
read. A GET or HEAD whose `If-None-Match` names it (weak comparison, RFC 9110 §8.8.3,
§13.1.2) or is `*` answers 304 with no body.
"""

from __future__ import annotations

import re

from imageregistry.httpinput import InputError, parse_int

# A whole blob at least this large is redirected from the main port to the blob port;
# smaller blobs are cheaper to send than to redirect.
REDIRECT_MIN_SIZE = 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
OCTET = "application/octet-stream"


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Inclusive (start, end) of a single satisfiable range, or None."""
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    try:
        if first == "":  # suffix range: the last N bytes
            length = parse_int(last, "Range")
            if length == 0 or size == 0:
                return None
            return max(0, size - length), size - 1
        start = parse_int(first, "Range")
        end = size - 1 if last == "" else min(parse_int(last, "Range"), size - 1)
    except InputError:  # beyond 64 bits: unsatisfiable (416), as Go's net/http answers
        return None
    if start >= size or end < start:
        return None
    return start, end


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
