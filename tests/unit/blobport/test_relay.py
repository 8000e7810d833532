"""`blobport.relay` on real loopback sockets: a one-shot HTTP server thread plays the
object store (its answers are written by hand, so a test can cut one short), and a socket
pair stands for the client's connection."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from imageregistry.blobport.relay import relay_body
from imageregistry.storage.driver import RelaySource
from imageregistry.storage.presigned import UpstreamFailed, open_upstream

BODY = os.urandom(3 * 1024 * 1024 + 5)


@contextmanager
def store_answering(answer: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """A listener that reads one request head, writes `answer` and closes; yields its URL
    and the request heads it received."""
    listener = socket.create_server(("127.0.0.1", 0))
    heads: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            heads.append(head)
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/bucket/key?X-Amz-Signature=s", heads
    finally:
        thread.join(10)
        listener.close()


def relayed(answer: bytes, count: int) -> tuple[bytes, Exception | None, list[bytes]]:
    """What a client receives when `count` bytes of `answer`'s body are relayed to it,
    and the exception the relay raised (None: it finished)."""
    with store_answering(answer) as (url, heads):
        upstream = open_upstream(RelaySource(url), "GET", (0, count - 1), timeout=10)
        ours, theirs = socket.socketpair()
        received = bytearray()
        reader = threading.Thread(target=lambda: _drain(theirs, received), daemon=True)
        reader.start()
        failure: Exception | None = None
        try:
            relay_body(upstream, ours, count, lambda n: None)
        except Exception as exc:  # the test inspects it
            failure = exc
        finally:
            ours.close()
            upstream.close()
        reader.join(10)
        theirs.close()
    return bytes(received), failure, heads


def _drain(sock: socket.socket, into: bytearray) -> None:
    while chunk := sock.recv(1 << 20):
        into += chunk


def head(status: str, *fields: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *fields]) + "\r\n\r\n").encode()


def whole_range(total: int) -> bytes:
    """The head of a 206 announcing all `total` bytes."""
    length, span = f"Content-Length: {total}", f"Content-Range: bytes 0-{total - 1}/{total}"
    return head("206 Partial Content", length, span)


def test_the_whole_answer_is_relayed_and_the_range_asked_for() -> None:
    total = len(BODY)
    answer = whole_range(total) + BODY
    received, failure, heads = relayed(answer, total)
    assert failure is None
    assert received == BODY
    request = heads[0].decode()
    assert request.startswith("GET /bucket/key?X-Amz-Signature=s HTTP/1.1\r\n")
    assert f"range: bytes=0-{total - 1}" in request.lower()


def test_an_answer_cut_short_by_the_store_fails_as_the_stores_fault() -> None:
    total = len(BODY)
    answer = whole_range(total) + BODY[:1000]  # then the store hangs up
    received, failure, _ = relayed(answer, total)
    assert isinstance(failure, UpstreamFailed)
    assert f"ended {total - 1000} bytes early" in str(failure)
    assert received == BODY[:1000]  # what arrived was passed on, nothing else


def test_the_answer_head_gives_the_stored_size() -> None:
    answer = head("206 Partial Content", "Content-Length: 10", "Content-Range: bytes 5-14/999")
    with store_answering(answer + b"0123456789") as (url, _):
        upstream = open_upstream(RelaySource(url), "GET", (5, 14), timeout=10)
        assert (upstream.status, upstream.object_size()) == (206, 999)
        upstream.close()
    with store_answering(head("200 OK", "Content-Length: 42")) as (url, _):
        upstream = open_upstream(RelaySource(url), "HEAD", None, timeout=10)
        assert (upstream.status, upstream.object_size()) == (200, 42)
        upstream.close()


def test_a_store_that_cannot_be_reached_or_answers_garbage_is_a_relay_failure() -> None:
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    with pytest.raises(UpstreamFailed, match="cannot connect"):
        open_upstream(RelaySource(f"http://127.0.0.1:{port}/b/k"), "GET", None, timeout=5)
    garbage = store_answering(b"this is not HTTP\r\n\r\n")
    with garbage as (url, _), pytest.raises(UpstreamFailed, match="no answer"):
        open_upstream(RelaySource(url), "GET", None, timeout=5)
