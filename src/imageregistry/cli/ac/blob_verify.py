"""`ac adm registry verify`: re-hash stored blobs and report damaged ones (dry run by default).

The server decides (`RegistryVerification`, one page of blobs per request, `prune.verify`);
this command drives the pages with the continue token each answer carries, draws progress
on stderr when it is a terminal, and prints one line per damaged blob, then a summary.
With `--confirm` the server marks them `corrupt`: pulls answer that the blob is damaged,
and the next push of the same digest repairs it. An interrupted or failed run prints the
token to resume from (`--continue TOKEN`). Exit status 1 when damaged blobs were found.
"""

from __future__ import annotations

import json
from typing import Any

import click
import httpx

from imageregistry import apigroups
from imageregistry.cli.ac.errors import CliError, from_response
from imageregistry.cli.ac.options import common_options, session
from imageregistry.cli.ac.output import human_size
from imageregistry.cli.ac.progress import Progress

API = apigroups.IMAGE_API
DRY_RUN_NOTICE = (
    "Dry run enabled - no modifications will be made. Add --confirm to mark damaged blobs"
)


def _resume_hint(token: str, confirm: bool) -> str:
    flag = " --confirm" if confirm else ""
    return f"resume with: ac adm registry verify{flag} --continue {token}"


class _Run:
    """The pages of one run, and what they found so far."""

    def __init__(
        self, client: httpx.Client, confirm: bool, page_size: int, token: str, bar: Progress
    ) -> None:
        self.client = client
        self.bar = bar
        self.confirm = confirm
        self.page_size = page_size
        self.token = token
        self.checked = 0
        self.checked_bytes = 0
        self.corrupt: list[dict[str, Any]] = []
        self.intact: list[dict[str, Any]] = []
        self.total: dict[str, Any] = {}

    def next_page(self) -> dict[str, Any]:
        """Verify one page; its status (`continue` is "" once every blob was checked)."""
        spec: dict[str, Any] = {"limit": self.page_size}
        if self.token:
            spec["continue"] = self.token
        body = {"apiVersion": apigroups.IMAGE_V1, "kind": "RegistryVerification", "spec": spec}
        path = f"{API}/registryverifications" + ("" if self.confirm else "?dryRun=All")
        response = self.client.post(path, json=body)
        if response.status_code >= 400:
            raise from_response(response)
        status = response.json().get("status") or {}
        self.checked += int(status.get("checked") or 0)
        self.checked_bytes += int(status.get("checkedBytes") or 0)
        self.corrupt += status.get("corrupt") or []
        self.intact += status.get("intact") or []
        self.total = status.get("total") or self.total
        self.token = str(status.get("continue") or "")
        self.bar.total = int(self.total.get("count") or 0) or None
        self.bar.update(self.checked)
        return status

    def lines(self, status: dict[str, Any]) -> list[str]:
        """One line per damaged (or repaired) blob of a page."""
        found = [_corrupt_line(blob, self.confirm) for blob in status.get("corrupt") or ()]
        for blob in status.get("intact") or ():
            done = "unmarked" if blob.get("unmarked") else "would be unmarked"
            found.append(f"Intact again: blob {blob['digest']} (marked corrupt, {done})")
        return found

    def result(self) -> dict[str, Any]:
        return {
            "dryRun": not self.confirm,
            "checked": self.checked,
            "checkedBytes": self.checked_bytes,
            "corrupt": self.corrupt,
            "intact": self.intact,
            "continue": self.token,
        }


def _corrupt_line(blob: dict[str, Any], confirm: bool) -> str:
    if not confirm:
        state = "would be marked corrupt"
    elif blob.get("marked"):
        state = "marked corrupt"
    else:
        state = "not marked: repaired or changed meanwhile"
    size = human_size(int(blob["size"]))
    return f"Corrupt blob {blob['digest']} ({size}): {blob['problem']} ({state})"


@click.command("verify")
@click.option(
    "--confirm",
    is_flag=True,
    help="Mark damaged blobs corrupt, so pulls refuse them and the next push repairs them.",
)
@click.option(
    "--continue", "resume", default="", help="Resume after this token (printed by a stopped run)."
)
@click.option(
    "--page-size",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="Blobs per request (a page also ends after about 1 GiB hashed).",
)
@click.option("-o", "--output", type=click.Choice(["json"]), help="Print the result as JSON.")
@common_options
@click.pass_context
def verify(
    ctx: click.Context, confirm: bool, resume: str, page_size: int, output: str | None
) -> None:
    """Re-hash stored blobs and report damaged ones (dry run unless --confirm)."""
    if not confirm:
        click.echo(DRY_RUN_NOTICE, err=True)
    sess = session(ctx)
    quiet = output == "json"
    with sess.client(timeout=3600.0) as client, Progress("Verifying blobs") as bar:
        run = _Run(client, confirm, page_size, resume, bar)
        try:
            while True:
                status = run.next_page()
                lines = [] if quiet else run.lines(status)
                if lines:
                    bar.clear()
                    click.echo("\n".join(lines))
                if not run.token:
                    break
        except KeyboardInterrupt:
            hint = f"; {_resume_hint(run.token, confirm)}" if run.token else ""
            raise CliError(f"interrupted{hint}", exit_code=130) from None
        except (CliError, httpx.HTTPError) as exc:
            if not run.token:
                raise
            raise CliError(f"{exc}; {_resume_hint(run.token, confirm)}") from None
    if quiet:
        click.echo(json.dumps(run.result(), indent=2))
    else:
        found = len(run.corrupt)
        click.echo(f"Checked {run.checked} blobs ({human_size(run.checked_bytes)})")
        if confirm:
            marked = sum(1 for b in run.corrupt if b.get("marked"))
            click.echo(f"Found {found} damaged blobs, marked {marked} corrupt")
            if marked:
                click.echo("Pushing each of them again repairs it", err=True)
        else:
            click.echo(f"Found {found} damaged blobs")
    if run.corrupt:
        raise CliError(f"{len(run.corrupt)} damaged blob(s) found", exit_code=1)
