"""`ac get`, `ac describe`, `ac delete` for the image, namespace, service-account and
role-binding resources, printed the way kubectl prints them.

Plain and `-o wide` output renders the server's Table (the server decides the columns,
so `ac` and `kubectl` agree); `-o yaml|json|name|jsonpath=...` render the objects.
"""

from __future__ import annotations

from typing import Any

import click
import httpx

from imageregistry.cli.ac.describe import describe_object, describe_quota
from imageregistry.cli.ac.errors import CliError, from_response
from imageregistry.cli.ac.options import common_options, global_options, session
from imageregistry.cli.ac.printers import jsonpath, render_table, to_json, to_yaml
from imageregistry.cli.ac.resources import ResourceKind, resolve_kind

TABLE_ACCEPT = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
OUTPUTS = ("wide", "yaml", "json", "name")


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise from_response(response)
    return response.json()


def _scope(ctx: click.Context, kind: ResourceKind) -> tuple[str | None, bool]:
    opts = global_options(ctx)
    if not kind.namespaced:
        return None, False
    if opts.all_namespaces:
        return None, True
    return opts.namespace or session(ctx).namespace, False


def _names(names: tuple[str, ...]) -> tuple[str, ...]:
    """Object names never hold `/` (a namespace goes in -n, a type in the first argument)."""
    for name in names:
        if "/" in name or not name:
            raise CliError(
                f"invalid resource name {name!r} — give the type and bare names,"
                " the namespace with -n (ac get istag -n NS STREAM:TAG)"
            )
    return names


def _objects(
    client: httpx.Client, kind: ResourceKind, namespace: str | None, names: tuple[str, ...]
) -> tuple[list[dict[str, Any]], bool]:
    """The objects and whether a list (not named objects) was asked for."""
    if names:
        return [_check(client.get(kind.object_path(namespace, n))) for n in names], False
    body = _check(client.get(kind.collection_path(namespace), params={"limit": 500}))
    items = body.get("items") or []
    for item in items:
        item.setdefault("apiVersion", kind.api_version)
        item.setdefault("kind", kind.kind)
    return items, True


def _print_objects(
    objs: list[dict[str, Any]], is_list: bool, output: str, kind: ResourceKind
) -> None:
    if output == "name":
        for obj in objs:
            click.echo(f"{kind.qualified}/{obj.get('metadata', {}).get('name', '')}")
        return
    doc: Any = (
        objs[0]
        if not is_list and len(objs) == 1
        else {
            "apiVersion": "v1",
            "items": objs,
            "kind": "List",
            "metadata": {"resourceVersion": ""},
        }
    )
    if output == "yaml":
        click.echo(to_yaml(doc), nl=False)
    elif output == "json":
        click.echo(to_json(doc))
    else:
        click.echo(jsonpath(doc, output.split("=", 1)[1]), nl=False)


def _print_table(
    client: httpx.Client,
    kind: ResourceKind,
    namespace: str | None,
    names: tuple[str, ...],
    wide: bool,
    all_namespaces: bool,
) -> None:
    headers = {"Accept": TABLE_ACCEPT}
    docs = (
        [_check(client.get(kind.object_path(namespace, n), headers=headers)) for n in names]
        if names
        else [
            _check(
                client.get(kind.collection_path(namespace), headers=headers, params={"limit": 500})
            )
        ]
    )
    if any(d.get("kind") != "Table" for d in docs):
        raise CliError("the server did not answer with a Table — use -o yaml or -o json")
    merged = {"columnDefinitions": docs[0].get("columnDefinitions"), "rows": []}
    for d in docs:
        merged["rows"] += d.get("rows") or []
    if not merged["rows"]:
        # kubectl's wording: a period only after the namespace clause.
        where = f" in {namespace} namespace." if namespace else ""
        click.echo(f"No resources found{where}", err=True)
        return
    click.echo(render_table(merged, wide, all_namespaces))


@click.command("get")
@click.argument("resource")
@click.argument("names", nargs=-1)
@click.option("-o", "--output", help="wide|yaml|json|name|jsonpath=TEMPLATE")
@common_options
@click.pass_context
def get(ctx: click.Context, resource: str, names: tuple[str, ...], output: str | None) -> None:
    """Display one or many resources."""
    if output and output not in OUTPUTS and not output.startswith("jsonpath="):
        raise CliError(
            f"unable to match a printer for output format {output!r}: use one of "
            + ", ".join(OUTPUTS)
            + ", jsonpath=..."
        )
    if output == "jsonpath=":
        raise CliError("template format specified but no template given: -o jsonpath={.items}")
    if output and output.startswith("jsonpath="):
        jsonpath({}, output.split("=", 1)[1])  # a malformed template fails before any request
    kind = resolve_kind(resource)
    names = _names(names)
    namespace, all_ns = _scope(ctx, kind)
    with session(ctx).client() as client:
        if output in (None, "wide"):
            _print_table(client, kind, namespace, names, output == "wide", all_ns)
            return
        objs, is_list = _objects(client, kind, namespace, names)
    _print_objects(objs, is_list, output or "", kind)


@click.command("describe")
@click.argument("resource")
@click.argument("names", nargs=-1)
@common_options
@click.pass_context
def describe(ctx: click.Context, resource: str, names: tuple[str, ...]) -> None:
    """Show details of resources."""
    kind = resolve_kind(resource)
    names = _names(names)
    namespace, _ = _scope(ctx, kind)
    with session(ctx).client() as client:
        objs, listed = _objects(client, kind, namespace, names)
        if listed:  # like kubectl: list for the names, then GET each full object
            objs = [
                _check(
                    client.get(
                        kind.object_path(o["metadata"].get("namespace"), o["metadata"]["name"])
                    )
                )
                for o in objs
            ]
    render = describe_quota if kind.plural == "resourcequotas" else describe_object
    click.echo("\n\n".join(render(o) for o in objs), nl=False)


@click.command("delete")
@click.argument("resource")
@click.argument("names", nargs=-1, required=True)
@common_options
@click.pass_context
def delete(ctx: click.Context, resource: str, names: tuple[str, ...]) -> None:
    """Delete resources by name."""
    kind = resolve_kind(resource)
    names = _names(names)
    namespace, _ = _scope(ctx, kind)
    with session(ctx).client() as client:
        for name in names:
            response = client.request(
                "DELETE",
                kind.object_path(namespace, name),
                json={"propagationPolicy": "Background"},
            )
            _check(response)
            click.echo(f'{kind.qualified} "{name}" deleted')
