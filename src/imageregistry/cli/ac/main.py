"""`ac`: the Registry v2 client CLI (commands arrive with later changes)."""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """Registry v2 client."""
