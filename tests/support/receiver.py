"""A notification receiver on loopback: records every envelope POSTed to it, by path.

It can be stopped and started again on the same port, to play an endpoint that is down
for a while. Each request is answered 200 after it was recorded.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.postgres import free_port


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    envelope: dict[str, Any]

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.envelope["events"]
        return events


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    deliveries: list[Delivery] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(self.path, dict(self.headers.items()), json.loads(body))
                    )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for d in self.deliveries if d.path == path for e in d.events]

    def wait_for(self, path: str, predicate: Any, timeout: float = 120.0) -> list[dict[str, Any]]:
        """The events received on `path` once `predicate(events)` holds (polling)."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(path)
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"events on {path} never matched: {json.dumps(events)[:3000]}")
            time.sleep(0.2)
