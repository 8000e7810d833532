"""`ac adm prune images`: preview or apply image pruning planned on the server.

Every flag of docs/behaviour.md#ac-adm-prune-images. The command gathers in-use references on the
client (a file and/or the workloads of a cluster, `references.py`), sends the options as an
`ImagePrune` to the server, which plans and executes in one transaction (dry run unless
`--confirm`), and prints the plan: one line per action, then the `Summary:` line. The dry-run notice
and progress go to stderr so stdout stays parseable; `-o json` prints the server's answer. Any
failed step makes the exit status non-zero after all others ran. `--undo RUN` shows what a recorded
run (a confirmed prune or a manifest delete by digest) would restore, and with `--confirm` restores
it, until registry GC has reclaimed its blobs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from imageregistry import apigroups
from imageregistry.cli.ac.errors import CliError
from imageregistry.cli.ac.gc import print_gc
from imageregistry.cli.ac.operations import post_operation
from imageregistry.cli.ac.options import common_options
from imageregistry.cli.ac.references import gather_references
from imageregistry.prune.inuse import few_references, parse_reference
from imageregistry.prune.options import InvalidOptions, PruneOptions, parse_duration
from imageregistry.quantity import approx_bytes

STORAGE = f"{apigroups.IMAGE}/storage"  # the quota resource counted in bytes

DRY_RUN_NOTICE = "Dry run enabled - no modifications will be made. Add --confirm to remove images"
UNDO_DRY_RUN_NOTICE = "Dry run enabled - no modifications will be made. Add --confirm to restore"


def print_prune(status: dict[str, Any]) -> int:
    failed = 0
    for action in status.get("actions") or ():
        line = action["description"]
        if action.get("error"):
            failed += 1
            line += f" (failed: {action['error']})"
        click.echo(line)
    for namespace, freed in sorted((status.get("quotaReleased") or {}).items()):
        amounts = ", ".join(
            f"{r} {approx_bytes(int(v))} ({v} bytes)" if r == STORAGE else f"{r} {v}"
            for r, v in sorted(freed.items())
        )
        click.echo(f"Released quota in namespace {namespace}: {amounts}")
    for kept in status.get("immutableTags") or ():
        click.echo(
            f"Kept image {kept['image']}: tag {kept['tag']} of "
            f"{kept['namespace']}/{kept['imageStream']} is immutable by ImageTagPolicy "
            f'"{kept["policy"]}"'
        )
    click.echo(status.get("summary", ""))  # last: scripts read the summary line
    if status.get("runID"):
        run = status["runID"]
        click.echo(
            f"Recorded prune run {run}; undo with: ac adm prune images --undo {run}", err=True
        )
    if status.get("registryGC") is not None:
        failed += print_gc(status["registryGC"])
    return failed


def _options(kw: dict[str, Any], references: set[str]) -> PruneOptions:
    try:
        younger = parse_duration(kw["keep_younger_than"])
        return PruneOptions(
            keep_tag_revisions=kw["keep_tag_revisions"],
            keep_younger_than=younger,
            whitelist=tuple(kw["whitelist"]),
            all=kw["all_"],
            prune_registry=kw["prune_registry"],
            registry_url=kw["registry_url"] or "",
            ignore_invalid_refs=kw["ignore_invalid_refs"],
            keep_referenced=tuple(sorted(references)),
            catalog_page_size=kw["catalog_page_size"] or 0,
        )
    except InvalidOptions as exc:
        raise click.UsageError(str(exc)) from None


def _undo_alone(ctx: click.Context) -> None:
    """--undo restores one recorded run: pruning flags beside it would be silently ignored."""
    given = [
        param.opts[0]
        for param in ctx.command.params
        if param.name in _PRUNING_FLAGS
        and ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE
    ]
    if given:
        raise click.UsageError(f"--undo takes no pruning flags (got {', '.join(given)})")


_PRUNING_FLAGS = (
    "keep_tag_revisions",
    "keep_younger_than",
    "whitelist",
    "all_",
    "prune_registry",
    "registry_url",
    "ignore_invalid_refs",
    "reference_files",
    "cluster_kubeconfig",
    "catalog_page_size",
)


def _check_references(refs: set[str]) -> None:
    """Refuse unparseable in-use references here, before anything is sent, naming a few
    (shortened: a wrong file given to --keep-referenced-from may hold secrets)."""
    bad = []
    for ref in sorted(refs):
        try:
            parse_reference(ref)
        except ValueError:
            bad.append(ref)
    if bad:
        raise click.UsageError(
            f"{len(bad)} in-use image reference(s) are not image references: {few_references(bad)}"
            " — fix the references file, or pass --ignore-invalid-refs to skip them"
        )


@click.group("prune")
def prune() -> None:
    """Remove unused image metadata (dry run by default)."""


@prune.command("images")
@click.option(
    "--keep-tag-revisions",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Keep this many most recent items of every tag's history.",
)
@click.option(
    "--keep-younger-than",
    default="60m",
    show_default=True,
    help="Keep images and history items younger than this Go duration (72h, 90m).",
)
@click.option(
    "--whitelist",
    multiple=True,
    metavar="REGEX",
    help="Never touch repositories ns/stream matching this regex (repeatable).",
)
@click.option("--all", "all_", is_flag=True, help="Ignore the keep-* retention flags.")
@click.option("--confirm", is_flag=True, help="Actually delete (default: dry run).")
@click.option("--dry-run", is_flag=True, help="Only show what would be deleted (the default).")
@click.option(
    "--prune-registry",
    is_flag=True,
    help="After a confirmed prune, run registry garbage collection.",
)
@click.option("--registry-url", help="Registry host that workload references must name.")
@click.option("--ignore-invalid-refs", is_flag=True, help="Skip unparseable image references.")
@click.option(
    "--keep-referenced-from",
    "reference_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of image references in use, one per line (repeatable).",
)
@click.option(
    "--cluster-kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Keep images used by workloads of this Kubernetes cluster.",
)
@click.option(
    "--catalog-page-size",
    type=click.IntRange(min=1),
    default=None,
    help="Accepted for compatibility.",
)
@click.option(
    "--undo",
    "undo_run",
    metavar="RUN",
    help="Restore what a recorded run removed (dry run unless --confirm).",
)
@click.option("-o", "--output", type=click.Choice(["json"]), help="Print the plan as JSON.")
@common_options
@click.pass_context
def images(ctx: click.Context, /, **kw: Any) -> None:
    """Prune images: history items and Image objects nothing needs any more."""
    if kw["confirm"] and kw["dry_run"]:
        raise click.UsageError("--confirm and --dry-run cannot be used together")
    if kw["undo_run"]:
        _undo_alone(ctx)
    dry_run = not kw["confirm"]
    if kw["undo_run"]:
        spec: dict[str, Any] = {"undo": kw["undo_run"]}
    else:
        refs = gather_references(kw["reference_files"], kw["cluster_kubeconfig"])
        if not kw["ignore_invalid_refs"]:
            _check_references(refs)
        spec = _options(kw, refs).to_spec()
    body = {"apiVersion": apigroups.IMAGE_V1, "kind": "ImagePrune", "spec": spec}
    if dry_run:
        click.echo(UNDO_DRY_RUN_NOTICE if kw["undo_run"] else DRY_RUN_NOTICE, err=True)
    answer = post_operation(ctx, "imageprunes", body, dry_run)
    status = answer.get("status") or {}
    if kw["output"] == "json":
        click.echo(json.dumps(answer, indent=2))
        failed = int(status.get("failed") or 0)
    elif kw["undo_run"]:
        failed = print_undo(status)
    else:
        failed = print_prune(status)
    if failed:
        raise CliError(f"{failed} step(s) failed", exit_code=1)


def print_undo(status: dict[str, Any]) -> int:
    """One line per Image object and tag history item the undo restores (a dry run: would
    restore), the streams it updates, what it cannot restore, then the summary."""
    verb = "Would restore" if status.get("dryRun") else "Restored"
    for digest in status.get("images") or ():
        click.echo(f"{verb} image {digest}")
    for item in status.get("tagItems") or ():
        click.echo(f"{verb} tag item {item['imageStream']}:{item['tag']} -> {item['image']}")
    for stream in status.get("imageStreams") or ():
        click.echo(f"{'Would update' if status.get('dryRun') else 'Updated'} image stream {stream}")
    for skipped in status.get("skipped") or ():
        click.echo(f"Cannot restore {skipped}")
    click.echo(status.get("summary", ""))
    return len(status.get("skipped") or ())
