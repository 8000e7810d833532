"""`meta.k8s.io/v1` Table responses for `kubectl get`, and the Age column.

kubectl asks for `as=Table` and prints cells verbatim, so the server computes every cell,
Age included (docs/kubectl.md#table-output). Columns with priority 1 only show with `-o wide`. Each
row carries a PartialObjectMetadata (or the whole object with `includeObject=Object`), which
kubectl needs for the NAMESPACE column of `-A` and for `--show-labels`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

TABLE_ACCEPT_MARK = "as=table"


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    priority: int = 0
    format: str = ""
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "priority": self.priority}
        out["format"] = self.format
        out["description"] = self.description
        return out


NAME_COLUMN = Column("Name", format="name", description="Name of the object")
AGE_COLUMN = Column("Age", description="Time since the object was created")

Cells = Callable[[dict[str, Any], datetime], list[Any]]


def wants_table(accept: str) -> bool:
    """True when the Accept header prefers a meta.k8s.io Table (kubectl get)."""
    first = accept.split(",", 1)[0].replace(" ", "").lower()
    return TABLE_ACCEPT_MARK in first and "g=meta.k8s.io" in first


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """kube's duration.HumanDuration: `45s`, `3m20s`, `5h10m`, `3d4h`, `400d`, `3y20d`."""
    if seconds < -1:
        return "<invalid>"
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 192:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    y = d // 365
    if y < 8:
        return f"{y}y{d % 365}d" if d % 365 else f"{y}y"
    return f"{y}y"


def age(value: Any, now: datetime) -> str:
    when = parse_time(value)
    if when is None:
        return "<unknown>"
    return human_duration((now - when).total_seconds())


def created_age(obj: dict[str, Any], now: datetime) -> str:
    return age((obj.get("metadata") or {}).get("creationTimestamp"), now)


def default_cells(obj: dict[str, Any], now: datetime) -> list[Any]:
    return [(obj.get("metadata") or {}).get("name", ""), created_age(obj, now)]


def partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def render_table(
    columns: Sequence[Column],
    cells: Cells,
    items: Sequence[dict[str, Any]],
    now: datetime,
    *,
    resource_version: str,
    include_object: str = "Metadata",
    continue_token: str = "",
) -> dict[str, Any]:
    rows = []
    for obj in items:
        row: dict[str, Any] = {"cells": cells(obj, now)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_metadata(obj)
        rows.append(row)
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": [c.to_json() for c in columns],
        "rows": rows,
    }
