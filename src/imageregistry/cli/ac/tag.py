"""`ac tag SRC DST...` and `ac tag -d DST...`: point tags at images through the image API.

SRC is `[ns/]stream:tag` (resolved to its current image) or `[ns/]stream@sha256:...`;
each DST `[ns/]stream:tag` gets an ImageStreamMapping (the same record a push creates).
`-d` deletes the ImageStreamTag, which removes the tag and its history.
"""

from __future__ import annotations

import re

import click

from imageregistry import apigroups
from imageregistry.cli.ac.errors import CliError, from_response
from imageregistry.cli.ac.options import common_options, session
from imageregistry.content.reference import is_namespace, is_stream_name, is_tag

API = apigroups.IMAGE_API


_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


def split_ref(text: str, default_ns: str) -> tuple[str, str, str, str]:
    """(namespace, stream, tag, digest) of `[ns/]stream:tag` or `[ns/]stream@digest`."""
    path, _, digest = text.partition("@")
    path, _, tag = path.partition(":") if not digest else (path, "", "")
    ns, _, stream = path.rpartition("/")
    valid = (
        is_stream_name(stream)
        and (not ns or is_namespace(ns))
        and (is_tag(tag) if tag else _DIGEST.fullmatch(digest))
    )
    if not valid:
        raise CliError(
            f"invalid reference {text!r} — use [NAMESPACE/]STREAM:TAG or"
            " [NAMESPACE/]STREAM@sha256:DIGEST (lower case, no registry host)"
        )
    return ns or default_ns, stream, tag, digest


@click.command("tag")
@click.argument("refs", nargs=-1, required=True)
@click.option("-d", "--delete", "delete_tags", is_flag=True, help="Delete the given tags.")
@common_options
@click.pass_context
def tag(ctx: click.Context, refs: tuple[str, ...], delete_tags: bool) -> None:
    """Tag an existing image into image streams, or delete tags with -d."""
    sess = session(ctx)
    # Every reference is checked before the first change: a typo in the third one must
    # not leave the first two changed.
    parsed = [split_ref(ref, sess.namespace) for ref in refs]
    if delete_tags:
        if any(digest for *_, digest in parsed):
            raise CliError("-d deletes tags: give [NAMESPACE/]STREAM:TAG, not a digest")
        with sess.client() as client:
            for ns, stream, name, _ in parsed:
                response = client.delete(f"{API}/namespaces/{ns}/imagestreamtags/{stream}:{name}")
                if response.status_code >= 400:
                    raise from_response(response)
                click.echo(f"Deleted tag {ns}/{stream}:{name}.")
        return
    if len(refs) < 2:
        raise CliError("give a source and at least one destination: ac tag SRC DST")
    for dst, (_, _, dtag, _) in zip(refs[1:], parsed[1:], strict=True):
        if not dtag:
            raise CliError(f"destination {dst!r} needs a tag: [NAMESPACE/]STREAM:TAG")
    ns, stream, name, digest = parsed[0]
    with sess.client() as client:
        if not digest:
            response = client.get(f"{API}/namespaces/{ns}/imagestreamtags/{stream}:{name}")
            if response.status_code >= 400:
                raise from_response(response)
            digest = str(response.json()["image"]["metadata"]["name"])
        for dns, dstream, dtag, _ in parsed[1:]:
            mapping = {
                "apiVersion": apigroups.IMAGE_V1,
                "kind": "ImageStreamMapping",
                "metadata": {"name": dstream, "namespace": dns},
                "image": {"metadata": {"name": digest}},
                "tag": dtag,
            }
            response = client.post(f"{API}/namespaces/{dns}/imagestreammappings", json=mapping)
            if response.status_code >= 400:
                raise from_response(response)
            click.echo(f"Tag {dstream}:{dtag} set to {digest}.")
