"""`ac`: the Registry v2 client CLI — one module per command family, attached here.

Registration pattern: a family module defines a click command or group and this file
attaches it with one line. Top-level commands go on `main`
(`main.add_command(get.get)`); administrator commands go on the `adm` group from
`cli/ac/adm.py` (`adm.add_command(prune.prune)` gives `ac adm prune images` when
`prune` is a group holding an `images` command). Commands use
`options.common_options` for the kubectl-style global flags and `options.session(ctx)`
for the resolved kubeconfig and an httpx client; they raise `errors.CliError` for every
failure the user should read (the top-level `AcGroup` prints it as one `error:` line).
"""

from __future__ import annotations

import click

from imageregistry.cli.ac import blob_verify, gc, login, prune
from imageregistry.cli.ac.adm import adm
from imageregistry.cli.ac.errors import AcGroup
from imageregistry.cli.ac.get import delete, describe, get
from imageregistry.cli.ac.image_info import image
from imageregistry.cli.ac.options import common_options
from imageregistry.cli.ac.policy import policy
from imageregistry.cli.ac.tag import tag
from imageregistry.cli.ac.top import top
from imageregistry.cli.ac.verify import verify_image_signature


@click.group(cls=AcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@common_options
def main() -> None:
    """Registry v2 client."""


main.add_command(login.login)
main.add_command(login.logout)
main.add_command(login.whoami)
main.add_command(login.project)
main.add_command(login.registry)
main.add_command(get)
main.add_command(describe)
main.add_command(delete)
main.add_command(tag)
main.add_command(image)
main.add_command(adm)
adm.add_command(top)
adm.add_command(verify_image_signature)
adm.add_command(policy)
adm.add_command(prune.prune)
adm.add_command(gc.registry)
gc.registry.add_command(blob_verify.verify)
