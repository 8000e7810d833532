"""Send a server-side operation (`ImagePrune`, `RegistryGC`) and wait for its answer.

`ac adm prune images` and `ac adm gc` both post one object to the image group and wait, with
a spinner on a terminal, while the server plans and (with `--confirm`) applies it; this
module is what they share, so neither command module imports the other.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click

from imageregistry import apigroups
from imageregistry.cli.ac.errors import CliError, from_response
from imageregistry.cli.ac.options import session


@contextlib.contextmanager
def spinner(message: str) -> Iterator[None]:
    """A spinner on stderr while the server works, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield


def post_operation(ctx: click.Context, resource: str, body: dict[str, Any], dry_run: bool) -> Any:
    sess = session(ctx)
    path = f"{apigroups.IMAGE_API}/{resource}" + ("?dryRun=All" if dry_run else "")
    try:
        with sess.client(timeout=3600.0) as client, spinner("Waiting for the server..."):
            response = client.post(path, json=body)
    except KeyboardInterrupt:
        if dry_run:
            raise
        # The request may have reached the server, which finishes what it started.
        raise CliError(
            "interrupted — the server may still complete this run; check with a dry run",
            exit_code=130,
        ) from None
    if response.status_code >= 400:
        raise from_response(response)
    return response.json()
