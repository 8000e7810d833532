"""Signed blob-port links: what they grant, what they refuse, where they point."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from imageregistry.blobport.links import LINK_TTL_SECONDS, BlobLinks, LinkRefused
from imageregistry.content.digest import Digest

DIGEST = Digest("sha256", "a" * 64)
OTHER = Digest("sha256", "b" * 64)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def links(clock: Clock, key: bytes = b"k" * 32, listen: str = "0.0.0.0:5001") -> BlobLinks:
    return BlobLinks(key, listen, clock=clock)


def split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, dict(parse_qsl(parts.query))


def test_a_link_grants_its_digest_until_it_expires() -> None:
    clock = Clock()
    path, query = split(links(clock).url_for(DIGEST, "registry.example"))
    assert path == f"/blobs/{DIGEST}"
    assert links(clock).check(path, query) == DIGEST
    clock.now += LINK_TTL_SECONDS
    assert links(clock).check(path, query) == DIGEST
    clock.now += 1
    with pytest.raises(LinkRefused, match="expired") as refused:
        links(clock).check(path, query)
    assert refused.value.status == 403


def test_a_link_grants_nothing_else() -> None:
    clock = Clock()
    path, query = split(links(clock).url_for(DIGEST, "h"))
    forged = [
        (f"/blobs/{OTHER}", query),  # another blob with this blob's signature
        (path, {**query, "expires": str(int(query["expires"]) + 3600)}),  # a longer life
        (path, {**query, "signature": query["signature"][:-1] + "A"}),
        (path, {"expires": query["expires"]}),
        (path, {"signature": query["signature"]}),
        (path, {**query, "expires": "\uff11\uff12\uff13"}),  # fullwidth digits
        (path, {**query, "expires": "9" * 5000}),  # no giant int parsing
    ]
    for forged_path, forged_query in forged:
        with pytest.raises(LinkRefused) as refused:
            links(clock).check(forged_path, forged_query)
        assert refused.value.status == 403, (forged_path, forged_query)
    with pytest.raises(LinkRefused, match="signature"):
        links(clock, key=b"another key").check(path, query)


def test_a_link_carries_its_signed_recorded_size() -> None:
    clock = Clock()
    path, query = split(links(clock).url_for(DIGEST, "h", 3_000_000))
    assert links(clock).grant(path, query) == (DIGEST, 3_000_000)
    assert links(clock).grant(*split(links(clock).url_for(DIGEST, "h"))) == (DIGEST, None)
    for forged in (
        {**query, "size": "100"},  # a size the main port never recorded
        {k: v for k, v in query.items() if k != "size"},
        {**query, "size": "9" * 5000},
        {**query, "size": "-1"},
    ):
        with pytest.raises(LinkRefused) as refused:
            links(clock).grant(path, forged)
        assert refused.value.status == 403, forged


@pytest.mark.parametrize(
    "path",
    ["/", "/v2/", "/blobs/", "/blobs/sha256:xyz", "/blobs/../etc/passwd", "/blobs/md5:abc"],
)
def test_paths_that_name_no_blob_are_not_found(path: str) -> None:
    with pytest.raises(LinkRefused) as refused:
        links(Clock()).check(path, {"expires": "1", "signature": "x"})
    assert refused.value.status == 404


@pytest.mark.parametrize(
    ("listen", "public_url", "request_host", "base"),
    [
        ("0.0.0.0:5001", "", "registry.example", "http://registry.example:5001"),
        (":5001", "", "10.0.0.7", "http://10.0.0.7:5001"),
        ("[::]:5001", "", "::1", "http://[::1]:5001"),
        ("127.0.0.1:5001", "", "localhost", "http://127.0.0.1:5001"),
        ("[::1]:5001", "", "localhost", "http://[::1]:5001"),
        ("0.0.0.0:5001", "https://blobs.example/", "registry.example", "https://blobs.example"),
    ],
)
def test_links_point_where_the_client_can_reach_the_blob_port(
    listen: str, public_url: str, request_host: str, base: str
) -> None:
    url = BlobLinks(b"k", listen, public_url, clock=Clock()).url_for(DIGEST, request_host)
    assert url.startswith(f"{base}/blobs/{DIGEST}?expires=")


def test_the_key_never_shows_in_a_repr() -> None:
    assert "hunter2" not in repr(BlobLinks(b"hunter2", "0.0.0.0:5001"))
