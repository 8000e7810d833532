"""`ac tag SRC DST...` and `ac tag -d DST...`: point tags at images through the image API.

SRC is `[ns/]stream:tag` (resolved to its current image) or `[ns/]stream@sha256:...`;
each DST `[ns/]stream:tag` gets an ImageStreamMapping (the same record a push creates).
`-d` deletes the ImageStreamTag, which removes the tag and its history.
"""

from __future__ import annotations

import click

from imageregistry.cli.ac.errors import CliError, from_response
from imageregistry.cli.ac.options import common_options, session

API = "/apis/image.alauda.io/v1"


def split_ref(text: str, default_ns: str) -> tuple[str, str, str, str]:
    """(namespace, stream, tag, digest) of `[ns/]stream:tag` or `[ns/]stream@digest`."""
    path, _, digest = text.partition("@")
    path, _, tag = path.partition(":") if not digest else (path, "", "")
    ns, _, stream = path.rpartition("/")
    if not stream or "/" in ns or (not tag and not digest):
        raise CliError(f"invalid reference {text!r} — use [NAMESPACE/]STREAM:TAG or STREAM@DIGEST")
    return ns or default_ns, stream, tag, digest


@click.command("tag")
@click.argument("refs", nargs=-1, required=True)
@click.option("-d", "--delete", "delete_tags", is_flag=True, help="Delete the given tags.")
@common_options
@click.pass_context
def tag(ctx: click.Context, refs: tuple[str, ...], delete_tags: bool) -> None:
    """Tag an existing image into image streams, or delete tags with -d."""
    sess = session(ctx)
    with sess.client() as client:
        if delete_tags:
            for ref in refs:
                ns, stream, name, _ = split_ref(ref, sess.namespace)
                response = client.delete(f"{API}/namespaces/{ns}/imagestreamtags/{stream}:{name}")
                if response.status_code >= 400:
                    raise from_response(response)
                click.echo(f"Deleted tag {ns}/{stream}:{name}.")
            return
        if len(refs) < 2:
            raise CliError("give a source and at least one destination: ac tag SRC DST")
        ns, stream, name, digest = split_ref(refs[0], sess.namespace)
        if not digest:
            response = client.get(f"{API}/namespaces/{ns}/imagestreamtags/{stream}:{name}")
            if response.status_code >= 400:
                raise from_response(response)
            digest = str(response.json()["image"]["metadata"]["name"])
        for dst in refs[1:]:
            dns, dstream, dtag, _ = split_ref(dst, sess.namespace)
            if not dtag:
                raise CliError(f"destination {dst!r} needs a tag")
            mapping = {
                "apiVersion": "image.alauda.io/v1",
                "kind": "ImageStreamMapping",
                "metadata": {"name": dstream, "namespace": dns},
                "image": {"metadata": {"name": digest}},
                "tag": dtag,
            }
            response = client.post(f"{API}/namespaces/{dns}/imagestreammappings", json=mapping)
            if response.status_code >= 400:
                raise from_response(response)
            click.echo(f"Tag {dstream}:{dtag} set to {digest}.")
