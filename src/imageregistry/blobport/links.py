"""Signed, short-lived links from the main port to the blob port.

A link names one blob and an expiry time and carries an HMAC-SHA256 over both, keyed by a
secret kept in the metadata database, so every worker (and every replica on the same
database) mints and accepts the same links. A link is a bearer capability for that blob
until it expires, like an object store's presigned URL: it is handed out only after the
main port authorized the pull, it lives `LINK_TTL_SECONDS`, and it grants nothing else.
A link also carries the blob's recorded size (signed with the rest), so the blob port,
which has no database, can refuse a stored file whose size differs instead of sending
short or extra bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from imageregistry.content.digest import Digest, InvalidDigest

LINK_TTL_SECONDS = 300
PATH_PREFIX = "/blobs/"
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
_EXPIRES = re.compile(r"[0-9]{1,12}")
_SIZE = re.compile(r"[0-9]{1,19}")


def new_link_key() -> str:
    return secrets.token_hex(32)


class LinkRefused(Exception):
    """The link is malformed, forged or expired; `status` is the HTTP answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class BlobLinks:
    key: bytes = field(repr=False)  # the HMAC secret: never in a repr or a log
    listen: str  # the blob port's HOST:PORT
    public_url: str = ""  # how clients reach it; "" = derived from each request
    clock: Callable[[], float] = field(default=time.time)

    def url_for(self, digest: Digest, request_host: str, size: int | None = None) -> str:
        """A link to `digest` (of `size` recorded bytes, when given), for a client that
        reached the main port as `request_host`."""
        expires = int(self.clock()) + LINK_TTL_SECONDS
        signature = self._sign(str(digest), expires, size)
        query = f"expires={expires}&signature={signature}"
        if size is not None:
            query += f"&size={size}"
        return f"{self.base_url(request_host)}{PATH_PREFIX}{digest}?{query}"

    def base_url(self, request_host: str) -> str:
        """`public_url`, else the blob port's own address when it is a concrete one, else
        the host name the client used for the main port with the blob port's port."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host, _, port = self.listen.rpartition(":")
        if host in _WILDCARD_HOSTS:
            host = request_host
        host = host.strip("[]")
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def check(self, path: str, query: Mapping[str, str]) -> Digest:
        """The digest a link at `path?query` grants, or `LinkRefused`."""
        return self.grant(path, query)[0]

    def grant(self, path: str, query: Mapping[str, str]) -> tuple[Digest, int | None]:
        """The digest a link grants and the size it records (None for a link without
        one), or `LinkRefused`."""
        if not path.startswith(PATH_PREFIX):
            raise LinkRefused(404, "NOT_FOUND", "the blob port serves /blobs/<digest> only")
        try:
            digest = Digest.parse(path.removeprefix(PATH_PREFIX))
        except InvalidDigest as exc:
            raise LinkRefused(404, "DIGEST_INVALID", str(exc)) from None
        expires_text, signature = query.get("expires", ""), query.get("signature", "")
        if not _EXPIRES.fullmatch(expires_text) or not signature:
            raise LinkRefused(403, "DENIED", "the link has no valid expires and signature")
        expires = int(expires_text)
        size_text = query.get("size")
        if size_text is not None and not _SIZE.fullmatch(size_text):
            raise LinkRefused(403, "DENIED", "the link's size is not a number")
        size = None if size_text is None else int(size_text)
        expected = self._sign(str(digest), expires, size)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise LinkRefused(403, "DENIED", "the link's signature does not match")
        if expires < self.clock():
            raise LinkRefused(403, "DENIED", "the link has expired; ask the registry again")
        return digest, size

    def _sign(self, digest: str, expires: int, size: int | None = None) -> str:
        message = f"{digest}\n{expires}" + ("" if size is None else f"\n{size}")
        mac = hmac.new(self.key, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
