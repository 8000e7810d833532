"""The bounded parsers every surface uses for client input (`imageregistry.httpinput`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from imageregistry.httpinput import (
    INT64_MAX,
    BodyTooLarge,
    InputError,
    InvalidJSON,
    load_json,
    parse_int,
    read_body,
)

HUGE = "9" * 5000  # beyond Python's 4300-digit int() limit


@pytest.mark.parametrize(
    ("text", "minimum", "maximum", "expected"),
    [
        ("0", 0, 10, 0),
        ("10", 0, 10, 10),
        ("-5", -10, 10, -5),
        ("007", 0, 10, 7),
        ("0" * 5000 + "1", 0, 10, 1),
        ("-0", 0, 10, 0),
    ],
)
def test_parse_int_accepts_decimal_integers_in_range(
    text: str, minimum: int, maximum: int, expected: int
) -> None:
    assert parse_int(text, "n", minimum, maximum) == expected


@pytest.mark.parametrize(
    "text", ["", " 1", "1 ", "+1", "-1", "1.5", "1e3", "²", "١٢", "0x10", HUGE, str(INT64_MAX + 1)]
)
def test_parse_int_refuses_with_the_parameter_named(text: str) -> None:
    with pytest.raises(InputError, match=r"^invalid limit .*must be an integer from 0 to") as exc:
        parse_int(text, "limit")
    assert len(str(exc.value)) < 200  # a 5000-digit value is cut, not echoed


@pytest.mark.parametrize(
    "text",
    [
        HUGE,
        "[" + HUGE + "]",
        '{"size": -' + HUGE + "}",
        "[9223372036854775808]",
        "[1e999]",
        "[-1e999]",
        "[NaN]",
        "[Infinity]",
        "[-Infinity]",
        "[" * 100_000,
        "{",
        b"\xff\xfe\x00",
    ],
)
def test_load_json_refuses_what_it_cannot_keep(text: str | bytes) -> None:
    with pytest.raises(InvalidJSON):
        load_json(text)


def test_load_json_keeps_64_bit_numbers_and_the_pairs_hook() -> None:
    doc = load_json('{"a": [9223372036854775807, -9223372036854775808, 1.5e300]}')
    assert doc == {"a": [INT64_MAX, -(2**63), 1.5e300]}
    assert load_json(b'{"a": 1, "a": 2}', object_pairs_hook=list) == [("a", 1), ("a", 2)]


class _Request:
    """A request whose body streams from a generator, counting what was pulled."""

    def __init__(self, headers: dict[str, str], chunks: Iterator[bytes]) -> None:
        self.headers = headers
        self.chunks = chunks
        self.pulled = 0

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += len(chunk)
            yield chunk


def _endless() -> Iterator[bytes]:
    while True:
        yield b"x" * 65536


def test_read_body_returns_a_body_within_the_limit() -> None:
    request = _Request({"content-length": "10"}, iter([b"01234", b"56789"]))
    assert asyncio.run(read_body(request, 10)) == b"0123456789"


def test_read_body_refuses_a_declared_length_before_reading() -> None:
    request = _Request({"content-length": str(400 << 20)}, _endless())
    with pytest.raises(BodyTooLarge) as exc:
        asyncio.run(read_body(request, 1 << 20))
    assert request.pulled == 0 and exc.value.limit == 1 << 20


def test_read_body_cuts_a_chunked_body_off_at_the_limit() -> None:
    request = _Request({}, _endless())
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_body(request, 1 << 20))
    assert request.pulled <= (1 << 20) + 65536


def test_read_body_refuses_a_malformed_content_length() -> None:
    with pytest.raises(InputError, match="Content-Length"):
        asyncio.run(read_body(_Request({"content-length": HUGE}, iter([])), 10))
