"""An audit log writer that keeps its lines in memory, for tests of what gets audited."""

from __future__ import annotations

import json
from typing import Any


class Lines:
    """Stands where `observability.auditlog`'s file writer goes (`write`, `close`)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, line: bytes) -> None:
        self.lines.append(line)

    def close(self) -> None:
        return None

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]
