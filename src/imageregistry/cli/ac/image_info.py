"""`ac image info REF`: what an image is, read over `/v2/` with the session's token.

The manifest's bytes are hashed and compared with the digest the registry reports (and the digest
asked for); a mismatch fails loudly. An index needs `--filter-by-os=os/arch[/variant]` (or
`--show-multiarch` for every platform). Fields and their order follow
docs/behaviour.md#ac-image-info; the `Digest:` and `Media Type:` lines are parsed by migration
scripts and stay exact.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click
import httpx

from imageregistry.cli.ac.errors import CliError, from_response
from imageregistry.cli.ac.options import common_options, session
from imageregistry.cli.ac.output import ago, human_size
from imageregistry.cli.ac.progress import Progress
from imageregistry.cli.ac.references import parse_reference
from imageregistry.clock import system_clock

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
ACCEPT = ", ".join(
    (
        *INDEX_TYPES,
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


@dataclass(frozen=True)
class Fetched:
    digest: str
    media_type: str
    body: dict[str, Any]


def fetch_manifest(client: httpx.Client, repo: str, ref: str) -> Fetched:
    response = client.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
    if response.status_code >= 400:
        raise from_response(response)
    raw = response.content
    actual = "sha256:" + hashlib.sha256(raw).hexdigest()
    reported = response.headers.get("docker-content-digest", actual)
    if reported != actual or (ref.startswith("sha256:") and ref != actual):
        raise CliError(
            f"manifest digest mismatch for {repo}@{ref}: the registry reported {reported} but "
            f"the bytes hash to {actual} — the stored manifest is corrupt, do not trust it"
        )
    body = json.loads(raw)
    media_type = body.get("mediaType") or response.headers.get("content-type", "").split(";")[0]
    return Fetched(actual, media_type, body)


def platform_of(entry: dict[str, Any]) -> str:
    p = entry.get("platform") or {}
    parts = [p.get("os", ""), p.get("architecture", "")] + (
        [p["variant"]] if p.get("variant") else []
    )
    return "/".join(parts)


def _rows(
    name: str, image: Fetched, config: dict[str, Any], list_digest: str
) -> list[tuple[str, str]]:
    cfg = config.get("config") or {}
    layers = image.body.get("layers") or []
    total = sum(int(layer.get("size", 0)) for layer in layers)
    created = config.get("created", "")
    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
        created_text = ago(when, system_clock())
    except (ValueError, AttributeError):
        created_text = created or "<unknown>"
    rows = [("Name", name), ("Digest", image.digest)]
    if list_digest:
        rows.append(("Manifest List", list_digest))
    rows += [
        ("Media Type", image.media_type),
        ("Created", created_text),
        ("Image Size", f"{human_size(total)} in {len(layers)} layers"),
    ]
    rows += [
        ("Layers" if i == 0 else "", f"{human_size(int(la.get('size', 0)))} {la.get('digest')}")
        for i, la in enumerate(layers)
    ]
    rows += [("OS", config.get("os", "")), ("Arch", config.get("architecture", ""))]
    optional = [
        ("Author", config.get("author", "")),
        ("Entrypoint", " ".join(cfg.get("Entrypoint") or [])),
        ("Command", " ".join(cfg.get("Cmd") or [])),
        ("Working Dir", cfg.get("WorkingDir", "")),
        ("User", cfg.get("User", "")),
        ("Exposes Ports", ", ".join(sorted(cfg.get("ExposedPorts") or {}))),
    ]
    rows += [(k, v) for k, v in optional if v]
    multi = [
        ("Environment", list(cfg.get("Env") or [])),
        ("Labels", [f"{k}={v}" for k, v in sorted((cfg.get("Labels") or {}).items())]),
        ("Volumes", sorted(cfg.get("Volumes") or {})),
    ]
    for key, values in multi:
        rows += [(key if i == 0 else "", v) for i, v in enumerate(values)]
    return rows


def format_rows(rows: list[tuple[str, str]]) -> str:
    return "\n".join(f"{(k + ':') if k else '':<15}{v}".rstrip() for k, v in rows)


@click.group("image")
def image() -> None:
    """Inspect images in the registry."""


@image.command("info")
@click.argument("reference")
@click.option("--filter-by-os", help="Pick one platform of a multi-arch image: os/arch[/variant].")
@click.option("--show-multiarch", is_flag=True, help="Show every platform of a multi-arch image.")
@click.option("-o", "--output", type=click.Choice(["json"]), help="Output format.")
@common_options
@click.pass_context
def info(
    ctx: click.Context,
    reference: str,
    filter_by_os: str | None,
    show_multiarch: bool,
    output: str | None,
) -> None:
    """Describe an image: digest, media type, layers and config."""
    ref = parse_reference(reference)
    if ref is None:
        hint = " (no https:// in front)" if "://" in reference else ""
        raise CliError(
            f"invalid image reference {reference!r} — use"
            f" [HOST/]NAMESPACE/STREAM:TAG or [HOST/]NAMESPACE/STREAM@sha256:DIGEST{hint}"
        )
    if filter_by_os and not re.fullmatch(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?", filter_by_os):
        raise CliError(f"--filter-by-os={filter_by_os!r} is not OS/ARCH[/VARIANT] (linux/amd64)")
    sess = session(ctx)
    host = ref.host or sess.registry_host
    scheme = sess.server.split("://", 1)[0] if host == sess.registry_host else "https"
    # Tests hand an httpx transport in as the root context object (CliRunner `obj=`).
    transport = ctx.find_root().obj
    with (
        Progress(f"fetching {reference}") as progress,
        httpx.Client(
            base_url=f"{scheme}://{host}",
            headers=sess.headers(),
            verify=sess.verify,
            timeout=60.0,
            transport=transport if isinstance(transport, httpx.BaseTransport) else None,
        ) as client,
    ):
        reports = inspect(
            client, ref.repository, ref.digest or ref.tag, filter_by_os, show_multiarch, progress
        )
    if output == "json":
        docs = [
            {
                "name": reference,
                "digest": f.digest,
                "listDigest": ld or None,
                "mediaType": f.media_type,
                "layers": f.body.get("layers") or [],
                "config": c,
            }
            for f, ld, c in reports
        ]
        click.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
        return
    click.echo("\n\n".join(format_rows(_rows(reference, f, c, ld)) for f, ld, c in reports))


Report = tuple[Fetched, str, dict[str, Any]]


def choose(top: Fetched, filter_by_os: str | None, show_multiarch: bool) -> list[dict[str, Any]]:
    """The index entries to show; without a platform choice, the platforms in the error."""
    entries: list[dict[str, Any]] = top.body.get("manifests") or []
    if not filter_by_os and not show_multiarch:
        platforms = ", ".join(platform_of(e) for e in entries)
        raise CliError(
            f"the image is a manifest list with platforms {platforms} — "
            "pass --filter-by-os=OS/ARCH (or --show-multiarch for all of them)"
        )
    chosen = [e for e in entries if show_multiarch or platform_of(e) == filter_by_os]
    if not chosen:
        raise CliError(f"no image for platform {filter_by_os} in {top.digest}")
    return chosen


def inspect(
    client: httpx.Client,
    repo: str,
    ref: str,
    filter_by_os: str | None,
    show_multiarch: bool,
    progress: Progress,
) -> list[Report]:
    """Each selected image's verified manifest, its manifest list digest (or "") and config."""
    progress.step(f"fetching manifest {repo}:{ref}")
    top = fetch_manifest(client, repo, ref)
    images: list[tuple[Fetched, str]] = [(top, "")]
    if top.media_type in INDEX_TYPES or "manifests" in top.body:
        chosen = choose(top, filter_by_os, show_multiarch)
        progress.total = len(chosen)
        images = []
        for entry in chosen:
            progress.step(f"fetching manifest {entry['digest'][:19]}")
            images.append((fetch_manifest(client, repo, entry["digest"]), top.digest))
            progress.update(len(images))
    reports: list[Report] = []
    for fetched, list_digest in images:
        config_ref = (fetched.body.get("config") or {}).get("digest")
        config: dict[str, Any] = {}
        if config_ref:
            progress.step(f"fetching config {config_ref[:19]}")
            response = client.get(f"/v2/{repo}/blobs/{config_ref}", follow_redirects=True)
            if response.status_code >= 400:
                raise from_response(response)
            if "sha256:" + hashlib.sha256(response.content).hexdigest() != config_ref:
                raise CliError(
                    f"config blob digest mismatch for {repo}@{config_ref}: the registry served "
                    "bytes that hash differently — the stored blob is corrupt, do not trust it"
                )
            config = json.loads(response.content)
        reports.append((fetched, list_digest, config))
    return reports
