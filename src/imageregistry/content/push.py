"""Push → metadata: turn a validated manifest into the Image recorded for it.

`describe_image` computes what the Image row stores (docs/behaviour.md#image-api-resources): the
blob and child edges, the config summary (`dockerImageMetadata`), the creation time (the config's
`created`, else the push time), the storage size (unique layers plus config), the layer count and
the top non-empty layer (used for PARENTS in `ac adm top images`). `ManifestPusher.push` reads the
config blob when the manifest is an image, then records everything in one metadata transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import anyio.to_thread

from imageregistry.content import mediatypes as mt
from imageregistry.content.digest import Digest
from imageregistry.content.manifest import (
    ImageSummary,
    InvalidManifest,
    ParsedManifest,
    referrer_artifact_type,
    summarize_config,
)
from imageregistry.httpinput import InvalidJSON, load_json
from imageregistry.metadata.outbox import Emit
from imageregistry.metadata.registry import RepoKey
from imageregistry.metadata.registry_manifests import (
    BlobRef,
    ChildRef,
    ManifestMetadata,
    NewManifest,
)
from imageregistry.metadata.signatures import PushedSignatures, readable_blobs
from imageregistry.signatures import cosign, discovery
from imageregistry.storage.driver import BlobStore
from imageregistry.storage.errors import BlobNotFound

MAX_CONFIG_BYTES = 8 << 20  # larger "configs" are artifacts we do not summarise
SIGNING_TYPE = cosign.SIMPLESIGNING_MEDIA_TYPE
# Whether the pusher may create imagesignatures in the pushed repository's namespace.
SignRight = Callable[[], Awaitable[bool]]


def describe_image(
    digest: Digest,
    parsed: ParsedManifest,
    content: bytes,
    summary: ImageSummary,
    now: datetime,
) -> NewManifest:
    blob_refs: list[BlobRef] = []
    if parsed.config is not None:
        c = parsed.config
        blob_refs.append(BlobRef(-1, str(c.digest), c.size, c.media_type))
    for i, layer in enumerate(parsed.layers):
        if not mt.is_foreign_layer(layer.media_type):
            blob_refs.append(BlobRef(i, str(layer.digest), layer.size, layer.media_type))
    children = tuple(
        ChildRef(i, str(d.digest), d.size, d.media_type, d.os, d.architecture, d.variant)
        for i, d in enumerate(parsed.children)
    )
    unique = {str(d.digest): d.size for d in parsed.layers}
    storage = sum(unique.values()) + (parsed.config.size if parsed.config else 0)
    non_empty = [str(d.digest) for d in parsed.layers if str(d.digest) not in mt.EMPTY_LAYERS]
    return NewManifest(
        digest=str(digest),
        media_type=parsed.media_type,
        content=content,
        created=summary.created or now,
        blobs=tuple(blob_refs),
        children=children,
        config_digest=str(parsed.config.digest) if parsed.config else None,
        artifact_type=referrer_artifact_type(parsed),
        subject_digest=str(parsed.subject.digest) if parsed.subject else None,
        image_metadata=summary.metadata,
        storage_size=storage,
        layer_count=len(parsed.layers),
        top_layer=non_empty[-1] if non_empty else None,
    )


@dataclass(frozen=True)
class ManifestPusher:
    blobs: BlobStore
    manifests: ManifestMetadata

    async def _summary(self, parsed: ParsedManifest) -> ImageSummary:
        config = parsed.config
        if config is None or config.media_type not in mt.IMAGE_CONFIGS:
            return ImageSummary(None, {})
        if config.size > MAX_CONFIG_BYTES:
            return ImageSummary(None, {})
        try:
            data = await self.blobs.read_all(config.digest)
        except BlobNotFound:
            # The metadata transaction will answer MANIFEST_BLOB_UNKNOWN.
            return ImageSummary(None, {})
        return summarize_config(data)

    async def push(
        self,
        repo: RepoKey,
        digest: Digest,
        parsed: ParsedManifest,
        content: bytes,
        tag: str | None,
        now: datetime,
        may_create_ns: bool,
        may_sign: SignRight | None = None,
        emit: Emit | None = None,
    ) -> NewManifest:
        """Record the manifest. A cosign signature manifest (`sha256-<hex>.sig` tag or
        `subject`) also lists its signatures on the image it signs when that image is in
        this repository, so one verify command covers both signature kinds. That takes
        the signing right (`may_sign`, asked only then; none given means denied) and fits
        the image's signature limits, or the push is refused whole
        (`metadata.signatures.record_pushed_signatures`). `emit` adds the push's event
        notifications in the metadata transaction."""
        readable = await anyio.to_thread.run_sync(self._readable, repo, parsed)
        payloads = await self._signature_payloads(parsed, readable)
        signatures = await _pushed_signatures(content, tag, payloads, may_sign)
        summary = await self._summary(parsed)
        new = describe_image(digest, parsed, content, summary, now)
        await anyio.to_thread.run_sync(
            self.manifests.record, repo, new, tag, now, may_create_ns, signatures, emit
        )
        return new

    def _readable(self, repo: RepoKey, parsed: ParsedManifest) -> set[str]:
        """The payload blobs this push may read: those linked to its repository. (The config
        is read regardless: its summary is discarded when the push is refused, and a config
        that does not parse is no error, so reading it tells the pusher nothing.)"""
        wanted = [str(d.digest) for d in parsed.layers if d.media_type == SIGNING_TYPE]
        if not wanted:
            return set()
        with self.manifests.db.read() as conn:
            return readable_blobs(conn, repo.namespace, repo.name, wanted)

    async def _signature_payloads(
        self, parsed: ParsedManifest, readable: set[str]
    ) -> dict[str, bytes]:
        """The bytes of the layers typed as cosign simple-signing payloads, each checked to
        be one: the signature policy lets such manifests through unsigned (verifiers fetch
        them), so a runnable tar layer must not pass under that media type. Only blobs
        linked to the repository are read: an unreadable one, like a missing one, is left
        to the metadata transaction (MANIFEST_BLOB_UNKNOWN), so the answer says nothing
        about other repositories' blobs."""
        payloads: dict[str, bytes] = {}
        for layer in parsed.layers:
            if layer.media_type != SIGNING_TYPE or str(layer.digest) in payloads:
                continue
            if layer.size > cosign.MAX_PAYLOAD_BYTES:
                raise InvalidManifest(
                    f"layer {layer.digest} of type {SIGNING_TYPE} is over "
                    f"{cosign.MAX_PAYLOAD_BYTES} bytes; simple-signing payloads are small"
                )
            if str(layer.digest) not in readable:
                continue  # the metadata transaction answers MANIFEST_BLOB_UNKNOWN
            try:
                data = await self.blobs.read_all(layer.digest)
            except BlobNotFound:
                continue  # likewise
            if len(data) != layer.size:
                continue  # the metadata transaction answers the size mismatch
            try:
                payload = load_json(data)  # as `ac verify` reads it: no NaN, 64-bit numbers
            except InvalidJSON:
                payload = None
            if not isinstance(payload, dict):
                raise InvalidManifest(
                    f"layer {layer.digest} of type {SIGNING_TYPE} is not a "
                    "simple-signing JSON payload"
                )
            payloads[str(layer.digest)] = data
        return payloads


async def _pushed_signatures(
    content: bytes, tag: str | None, payloads: dict[str, bytes], may_sign: SignRight | None
) -> PushedSignatures | None:
    """The cosign signatures the manifest carries (its payload layers, already read and
    checked by the push) and the image they sign, or None for any other manifest."""
    target = discovery.signature_target(content, tag)
    if not target or not discovery.payload_digests(content):
        return None
    found = discovery.cosign_signatures_for(content, payloads.get)
    if not found:
        return None
    pairs = tuple((f.name_for(target), f.content) for f in found)
    allowed = may_sign is not None and await may_sign()  # deny by default
    return PushedSignatures(target, pairs, allowed)
