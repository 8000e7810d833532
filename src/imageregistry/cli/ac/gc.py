"""`ac adm registry gc`: preview or reclaim blobs no image uses (dry run by default).

The server decides from its database and sweeps (`RegistryGC`,
docs/behaviour.md#ac-adm-registry-gc); this command prints one line per blob, repository link and
abandoned upload, then `Would delete N blobs` / `Would free up SIZE` (or `Deleted` / `Freed up` with
`--confirm`). `--reconcile` adds the storage reconciler's report of bytes the database does not
know.
"""

from __future__ import annotations

import json
from typing import Any

import click

from imageregistry import apigroups
from imageregistry.cli.ac.errors import CliError
from imageregistry.cli.ac.operations import post_operation
from imageregistry.cli.ac.options import common_options
from imageregistry.cli.ac.output import human_size


def print_gc(status: dict[str, Any]) -> int:
    dry = bool(status.get("dryRun"))
    verb = "Would delete" if dry else "Deleting"
    for blob in status.get("blobs") or ():
        click.echo(f"{verb} blob {blob['digest']} ({human_size(int(blob['size']))})")
    for link in status.get("staleLinks") or ():
        done = "Would remove" if dry else "Removed"
        click.echo(f"{done} repository link {link['repository']} -> {link['digest']}")
    for upload in status.get("uploads") or ():
        where = f" in {upload['repository']}" if upload.get("repository") else ""
        click.echo(f"{'Would remove' if dry else 'Removed'} abandoned upload {upload['id']}{where}")
    for write in status.get("multipartUploads") or ():
        click.echo(
            f"{'Would abort' if dry else 'Aborted'} unfinished multipart upload of {write['key']}"
            f" (started {write['initiated']})"
        )
    for run in status.get("irreversibleRuns") or ():
        click.echo(f"Prune run {run} {'would no longer be' if dry else 'is no longer'} reversible")
    for failure in status.get("failed") or ():
        click.echo(f"Failed to delete {failure['target']}: {failure['error']}", err=True)
    held = status.get("held") or {}
    if int(held.get("count") or 0):
        click.echo(
            f"Kept {held['count']} unreferenced blobs ({human_size(int(held['size']))}) inside "
            f"the grace period; they become eligible at {held['until']}",
            err=True,
        )
    count, size = int(status.get("count") or 0), human_size(int(status.get("size") or 0))
    if dry:
        click.echo(f"Would delete {count} blobs")
        click.echo(f"Would free up {size}")
    else:
        click.echo(f"Deleted {count} blobs")
        click.echo(f"Freed up {size}")
    return len(status.get("failed") or ())


def print_reconcile(report: dict[str, Any]) -> None:
    unknown = report.get("unknown") or ()
    verb = "Unknown to the database" if report.get("dryRun") else "Deleted unknown"
    for blob in unknown:
        click.echo(f"{verb}: blob {blob['digest']} ({human_size(int(blob['size']))})")
    click.echo(
        f"Storage holds {len(unknown)} blobs ({human_size(int(report.get('size') or 0))}) "
        f"the database does not know, of {report.get('scanned', 0)} scanned"
    )
    writes = report.get("multipartUploads") or ()
    verb = "Stale" if report.get("dryRun") else "Aborted stale"
    for write in writes:
        click.echo(f"{verb} multipart upload of {write['key']} (started {write['initiated']})")
    if writes:
        click.echo(f"Storage holds {len(writes)} stale multipart uploads")


@click.group("registry")
def registry() -> None:
    """Registry storage maintenance."""


@registry.command("gc")
@click.option("--confirm", is_flag=True, help="Actually delete (default: dry run).")
@click.option(
    "--reconcile", is_flag=True, help="Also report storage bytes the database does not know."
)
@click.option("-o", "--output", type=click.Choice(["json"]), help="Print the result as JSON.")
@common_options
@click.pass_context
def gc(ctx: click.Context, confirm: bool, reconcile: bool, output: str | None) -> None:
    """Reclaim blobs no image references (dry run unless --confirm)."""
    if not confirm:
        click.echo(
            "Dry run enabled - no modifications will be made. Add --confirm to delete blobs",
            err=True,
        )
    body = {
        "apiVersion": apigroups.IMAGE_V1,
        "kind": "RegistryGC",
        "spec": {"reconcile": reconcile},
    }
    answer = post_operation(ctx, "registrygcs", body, not confirm)
    status = answer.get("status") or {}
    if output == "json":
        click.echo(json.dumps(answer, indent=2))
        failed = len(status.get("failed") or ())
    else:
        failed = print_gc(status)
        if status.get("reconcile") is not None:
            print_reconcile(status["reconcile"])
    if failed:
        raise CliError(f"{failed} step(s) failed", exit_code=1)
