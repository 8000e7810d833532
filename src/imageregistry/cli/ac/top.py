"""`ac adm top images|imagestreams`: usage reports computed on the server in one request.

The server streams a List with one item per line (`apiserver/usage.py`); this module parses
it line by line and prints the columns of behaviour.md §4. USAGE joins the references that
name the image (from `--references-file` and the workloads of `--cluster-kubeconfig`, by
current tag or digest) with the last pull the registry recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx

from imageregistry.cli.ac.errors import CliError, from_response
from imageregistry.cli.ac.options import common_options, global_options, session
from imageregistry.cli.ac.output import NONE, ago, human_size, join, table, yes_no
from imageregistry.cli.ac.references import ReferenceIndex, gather_references

API = "/apis/image.alauda.io/v1"
IMAGE_HEADERS = ("NAME", "IMAGESTREAMTAG", "PARENTS", "USAGE", "METADATA", "STORAGE")
STREAM_HEADERS = ("NAME", "STORAGE", "IMAGES", "LAYERS")


def iter_list_items(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Items of a List written one item per line; any other JSON layout is parsed whole."""
    first = next(lines, "")
    if not first.rstrip().endswith('"items":['):
        body = json.loads(first + "".join(lines) or "{}")
        yield from body.get("items") or []
        return
    for line in lines:
        text = line.strip().lstrip(",")
        if text and text not in ("]}", "]"):
            yield json.loads(text)


def fetch_items(ctx: click.Context, resource: str) -> Iterator[dict[str, Any]]:
    sess = session(ctx)
    opts = global_options(ctx)
    path = f"{API}/{resource}"
    if opts.namespace and not opts.all_namespaces:
        path = f"{API}/namespaces/{opts.namespace}/{resource}"
    with sess.client(timeout=300.0) as client, client.stream("GET", path) as response:
        if response.status_code >= 400:
            response.read()
            raise from_response(response)
        yield from iter_list_items(response.iter_lines())


def stream_tags_cell(item: dict[str, Any]) -> str:
    parts = [
        f"{s['namespace']}/{s['name']} ({','.join(s['tags'])})"
        for s in item.get("imageStreamTags") or ()
    ]
    return join(parts)


def usage_cell(item: dict[str, Any], refs: ReferenceIndex, now: datetime) -> list[str]:
    keys = [
        (f"{s['namespace']}/{s['name']}", tag)
        for s in item.get("imageStreamTags") or ()
        for tag in s["tags"]
    ]
    found = refs.matches(item["name"], keys) if refs else []
    pulled = item.get("lastPulled")
    if pulled:
        when = datetime.strptime(pulled, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        found.append(f"pulled {ago(when, now)}")
    return found


def image_row(item: dict[str, Any], refs: ReferenceIndex, now: datetime) -> list[str]:
    return [
        item["name"],
        stream_tags_cell(item),
        join(item.get("parents") or ()),
        join(usage_cell(item, refs, now)),
        yes_no(bool(item.get("metadata"))),
        human_size(int(item.get("storage") or 0)),
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
    now = datetime.now(UTC)
    items = fetch_items(ctx, "imageusages")
    if output == "json":
        rows = [{**i, "usage": usage_cell(i, index, now)} for i in items]
        click.echo(json.dumps({"kind": "List", "apiVersion": "v1", "items": rows}, indent=2))
        return
    _print(IMAGE_HEADERS, (image_row(i, index, now) for i in items))


@top.command("imagestreams")
@click.option("-o", "--output", type=click.Choice(["json"]), help="Output format.")
@common_options
@click.pass_context
def top_imagestreams(ctx: click.Context, output: str | None) -> None:
    """NAME  STORAGE  IMAGES  LAYERS, largest first."""
    items = fetch_items(ctx, "imagestreamusages")
    if output == "json":
        rows = list(items)
        click.echo(json.dumps({"kind": "List", "apiVersion": "v1", "items": rows}, indent=2))
        return
    _print(STREAM_HEADERS, (stream_row(i) for i in items))


def _print(headers: tuple[str, ...], rows: Iterator[list[str]]) -> None:
    try:
        materialized = list(rows)
    except httpx.HTTPError:
        raise
    except (ValueError, KeyError) as exc:
        raise CliError(f"the server sent a malformed usage report: {exc}") from None
    if not materialized:
        click.echo("No resources found.", err=True)
        return
    click.echo(table(headers, materialized))


__all__ = ["NONE", "top"]
