"""`ac adm`: the administrator command group.

Subcommands live in their own modules and are attached in `main.py` (see its docstring);
this module only defines the group so every family can import it without cycles.
"""

from __future__ import annotations

import click

from imageregistry.cli.ac.options import common_options


@click.group("adm")
@common_options
def adm() -> None:
    """Administrator commands: usage, pruning, garbage collection, signatures, policy."""
