"""A progress bar on stderr for long `ac` operations — only when stderr is a terminal.

Piped or redirected output never sees it ("a progress bar on stderr when it is a
terminal"), so scripts parsing stdout/stderr are unaffected. Redraws are throttled to ten a
second, so updating per batch of rows costs nothing measurable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_INTERVAL = 0.1


class Progress:
    """`with Progress("fetching") as p: p.total = n; p.update(done)`; `step(text)` for phases."""

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool | None = None):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total: int | None = None
        self.done = 0
        self._drawn = 0.0
        self._shown = False

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

    def clear(self) -> None:
        """Erase the bar (before printing a line to the same terminal); the next
        `update` draws it again."""
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False
            self._drawn = 0.0

    def update(self, done: int) -> None:
        self.done = done
        self._draw()

    def step(self, label: str) -> None:
        self.label = label
        self._draw(force=True)

    def line(self) -> str:
        if not self.total:
            return f"{self.label}…" + (f" {self.done:,}" if self.done else "")
        filled = min(_WIDTH, _WIDTH * self.done // self.total)
        bar = "█" * filled + "░" * (_WIDTH - filled)
        return f"{self.label} {bar} {self.done:,}/{self.total:,}"

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn < _INTERVAL:
            return
        self._drawn = now
        self._shown = True
        self.stream.write("\r\x1b[2K" + self.line())
        self.stream.flush()
