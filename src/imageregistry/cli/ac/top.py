"""`ac adm top images|imagestreams`: usage reports computed on the server in one request.

The server streams a List with one item per line (`apiserver/usage.py`); this module parses it line
by line and prints the columns of docs/behaviour.md#ac-adm-top. USAGE joins the references that name
the image (from `--references-file` and the workloads of `--cluster-kubeconfig`, by current tag or
digest) with the last pull the registry recorded.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from imageregistry import apigroups
from imageregistry.cli.ac.describe import describe_quota
from imageregistry.cli.ac.errors import CliError, from_response
from imageregistry.cli.ac.options import common_options, global_options, session
from imageregistry.cli.ac.output import NONE, ago, human_size, join, table
from imageregistry.cli.ac.progress import Progress
from imageregistry.cli.ac.references import ReferenceIndex, gather_references
from imageregistry.clock import system_clock
from imageregistry.tuning.collector import collector_paused

API = apigroups.IMAGE_API
IMAGE_HEADERS = ("NAME", "IMAGESTREAMTAG", "PARENTS", "USAGE", "METADATA", "STORAGE")
STREAM_HEADERS = ("NAME", "STORAGE", "IMAGES", "LAYERS")
# The fields of an image item array (the server's `apiserver.usage.IMAGE_COLUMNS`).
IMAGE_COLUMNS = (
    "name",
    "imageStreamTags",
    "parents",
    "lastPulled",
    "metadata",
    "storage",
    "layers",
)


def _batch(lines: list[bytes]) -> list[dict[str, Any]]:
    """Item lines (each after the first starting with `,`) parsed as one JSON array."""
    body = b"\n".join(lines).lstrip().lstrip(b",")
    items = json.loads(b"[" + body + b"]") if body.strip() else []
    return list(items)


@dataclass(frozen=True)
class UsageList:
    """A parsed usage List: `columns` names the fields when the items are arrays."""

    columns: tuple[str, ...] | None
    items: list[Any]


Convert = Callable[[UsageList], list[Any]]


def _items(batch: UsageList) -> list[Any]:
    return batch.items


def _whole(body: bytes, convert: Convert) -> UsageList:
    doc = json.loads(body or b"{}")
    columns = tuple(doc["columns"]) if doc.get("columns") else None
    return UsageList(columns, convert(UsageList(columns, list(doc.get("items") or []))))


def parse_usage_list(
    chunks: Iterable[bytes], progress: Progress | None = None, convert: Convert = _items
) -> UsageList:
    """The items of a List written one item per line by the server, parsed in batches.

    A light parse for 100,000 rows: complete lines are collected per network chunk and
    decoded with one `json.loads` call; the head line may carry `total` for the progress
    bar and `columns` for array items. Each batch goes through `convert` as it arrives
    (the printers build their rows while the rest is still on the wire). A body of any
    other layout (a proxy, an old server) is parsed whole.
    """
    items: list[Any] = []
    count = 0
    columns: tuple[str, ...] | None = None
    pending = b""
    head: bytes | None = None
    stream = iter(chunks)
    for chunk in stream:
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        if head is None and lines:
            head = lines.pop(0)
            if not head.rstrip().endswith(b'"items":['):
                return _whole(b"\n".join([head, *lines, pending]) + b"".join(stream), convert)
            meta = json.loads(head + b"]}")
            columns = tuple(meta["columns"]) if meta.get("columns") else None
            if progress is not None and isinstance(meta.get("total"), int):
                progress.total = meta["total"]
        if lines and lines[-1].startswith(b"]"):
            lines.pop()
        batch = _batch(lines)
        count += len(batch)
        items += convert(UsageList(columns, batch))
        if progress is not None:
            progress.update(count)
    if head is None:  # a body on one line: not the streamed layout
        return _whole(pending, convert)
    tail = pending.strip()
    if tail and not tail.startswith(b"]"):
        items += convert(UsageList(columns, _batch([tail])))
    return UsageList(columns, items)


def fetch_items(
    ctx: click.Context, resource: str, label: str, convert: Convert = _items
) -> UsageList:
    sess = session(ctx)
    opts = global_options(ctx)
    path = f"{API}/{resource}"
    if opts.namespace and not opts.all_namespaces:
        path = f"{API}/namespaces/{opts.namespace}/{resource}"
    with (
        Progress(label) as progress,
        sess.client(timeout=300.0) as client,
        client.stream("GET", path) as response,
    ):
        if response.status_code >= 400:
            response.read()
            raise from_response(response)
        try:
            return parse_usage_list(response.iter_raw(1 << 20), progress, convert)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CliError(f"the server sent a malformed usage report: {exc!r}") from None


def image_arrays(report: UsageList) -> list[list[Any]]:
    """Image items as arrays in `IMAGE_COLUMNS` order, whatever layout the server sent.

    The server sends arrays (`apiserver/usage.py`); objects (an older server) and arrays in
    another column order are rearranged, so the printers handle one shape.
    """
    if report.columns == IMAGE_COLUMNS:
        return report.items
    if report.columns is not None:
        try:
            where = [report.columns.index(c) for c in IMAGE_COLUMNS]
        except ValueError:
            raise CliError(f"the server sent usage columns {report.columns}") from None
        return [[item[i] for i in where] for item in report.items]
    return [
        [
            i["name"],
            [[s["namespace"], s["name"], s["tags"]] for s in i.get("imageStreamTags") or ()],
            i.get("parents") or [],
            i.get("lastPulled"),
            bool(i.get("metadata")),
            int(i.get("storage") or 0),
            int(i.get("layers") or 0),
        ]
        for i in report.items
    ]


def image_object(item: list[Any], usage: list[str]) -> dict[str, Any]:
    """The `-o json` form of one image array."""
    name, streams, parents, last_pulled, metadata, storage, layers = item
    return {
        "name": name,
        "imageStreamTags": [{"namespace": n, "name": s, "tags": t} for n, s, t in streams],
        "parents": parents,
        "lastPulled": last_pulled,
        "metadata": metadata,
        "storage": storage,
        "layers": layers,
        "usage": usage,
    }


def stream_tags_cell(streams: list[Any]) -> str:
    if not streams:
        return NONE
    return ", ".join(f"{ns}/{name} ({','.join(tags)})" for ns, name, tags in streams)


class UsageCells:
    """USAGE cells: references naming the image, then the last pull as `pulled N ago`."""

    def __init__(self, refs: ReferenceIndex, now: datetime) -> None:
        self.refs = refs
        self.now = now
        self._ago: dict[str, str] = {}  # many images share a pull time

    def pulled(self, stamp: str) -> str:
        text = self._ago.get(stamp)
        if text is None:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            text = self._ago[stamp] = f"pulled {ago(when, self.now)}"
        return text

    def values(self, item: list[Any]) -> list[str]:
        name, streams, _, stamp = item[:4]
        found: list[str] = []
        if self.refs:
            keys = [(f"{ns}/{stream}", tag) for ns, stream, tags in streams for tag in tags]
            found = self.refs.matches(name, keys)
        if stamp:
            found.append(self.pulled(stamp))
        return found


def image_row(item: list[Any], usage: UsageCells) -> list[str]:
    name, streams, parents, _, metadata, storage, _ = item
    return [
        name,
        stream_tags_cell(streams),
        ", ".join(parents) if parents else NONE,
        join(usage.values(item)),
        "yes" if metadata else "no",
        human_size(int(storage or 0)),
    ]


def stream_row(item: dict[str, Any]) -> list[str]:
    return [
        f"{item['namespace']}/{item['name']}",
        human_size(int(item["storage"])),
        str(item["images"]),
        str(item["layers"]),
    ]


@click.group("top")
def top() -> None:
    """Show usage statistics of images and image streams."""


@top.command("images")
@click.option("--references-file", "references_files", multiple=True, type=click.Path())
@click.option("--cluster-kubeconfig", type=click.Path(), help="Cluster whose workloads count.")
@click.option("-o", "--output", type=click.Choice(["json"]), help="Output format.")
@common_options
@click.pass_context
def top_images(
    ctx: click.Context,
    references_files: tuple[str, ...],
    cluster_kubeconfig: str | None,
    output: str | None,
) -> None:
    """NAME  IMAGESTREAMTAG  PARENTS  USAGE  METADATA  STORAGE, most tagged and largest first."""
    refs = gather_references(
        [Path(p) for p in references_files],
        Path(cluster_kubeconfig) if cluster_kubeconfig else None,
    )
    index = ReferenceIndex.build(refs, [session(ctx).registry_host])
    usage = UsageCells(index, system_clock())

    def convert(batch: UsageList) -> list[Any]:
        if output == "json":
            return [image_object(i, usage.values(i)) for i in image_arrays(batch)]
        return [image_row(i, usage) for i in image_arrays(batch)]

    with collector_paused():  # 100,000 rows of lists: collections would traverse them all
        rows = fetch_items(ctx, "imageusages", "fetching image usage", convert).items
        if output == "json":
            click.echo(json.dumps({"kind": "List", "apiVersion": "v1", "items": rows}, indent=2))
            return
        _print(IMAGE_HEADERS, rows)


@top.command("imagestreams")
@click.option("-o", "--output", type=click.Choice(["json"]), help="Output format.")
@common_options
@click.pass_context
def top_imagestreams(ctx: click.Context, output: str | None) -> None:
    """NAME  STORAGE  IMAGES  LAYERS, largest first."""
    convert = _items if output == "json" else lambda b: [stream_row(i) for i in b.items]
    with collector_paused():
        rows = fetch_items(ctx, "imagestreamusages", "fetching image stream usage", convert).items
        if output == "json":
            click.echo(json.dumps({"kind": "List", "apiVersion": "v1", "items": rows}, indent=2))
            return
        _print(STREAM_HEADERS, rows)
    opts = global_options(ctx)
    if opts.namespace and not opts.all_namespaces:
        _print_quotas(ctx, opts.namespace)


def _print_quotas(ctx: click.Context, namespace: str) -> None:
    """The namespace's ResourceQuotas after its streams, as `kubectl describe quota` prints
    them: the same numbers, read from the same objects (STORAGE above counts each stream's
    tagged images; a quota counts the namespace's distinct blobs, all images included).
    Nothing when the caller may not read quotas or the namespace has none."""
    with session(ctx).client() as client:
        response = client.get(f"/api/v1/namespaces/{namespace}/resourcequotas")
    if response.status_code != 200:
        return
    for quota in response.json().get("items") or []:
        click.echo("")
        click.echo(describe_quota(quota), nl=False)


def _print(headers: tuple[str, ...], rows: list[list[str]]) -> None:
    if not rows:
        click.echo("No resources found.", err=True)
        return
    # One write of plain text: 100,000 rows through a rich table took seconds.
    sys.stdout.write(table(headers, rows) + "\n")
    sys.stdout.flush()


__all__ = ["NONE", "top"]
