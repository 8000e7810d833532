"""The blob port's listening socket (no imports beyond `socket`, so the supervisor can
check the address before starting workers without loading the application)."""

from __future__ import annotations

import errno
import socket


def bind(listen: str, *, reuse_port: bool) -> socket.socket:
    """A listening socket on `HOST:PORT` (an empty or bracketed host as usual)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family, kind, proto, _, address = socket.getaddrinfo(
        host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def check_bindable(listen: str, setting: str = "blob_listen") -> str | None:
    """Why nothing can listen on `listen`, or None (checked before workers start).

    The probe binds without SO_REUSEPORT, so an address another server holds — even one
    that set SO_REUSEPORT itself, as Granian does — is refused instead of shared."""
    try:
        bind(listen, reuse_port=False).close()
    except OSError as exc:
        problem = f"{setting} {listen}: {exc.strerror or exc}"
        if exc.errno == errno.EADDRINUSE:
            problem += " (another server, perhaps another registry, is serving there)"
        return problem
    return None
