"""Media types the registry understands (OCI image-spec v1.1, Docker image manifest v2.2).

Manifests of these types are parsed and recorded as Images; other manifest media types are
refused. Docker schema1 types are named so that they can be refused with a clear message.
"""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFESTS = IMAGE_MANIFESTS | INDEXES
SCHEMA1 = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
IMAGE_CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG})

# Layers a client never uploads: Docker foreign layers and OCI non-distributable layers
# point at external URLs (image-spec layer.md, "Non-distributable layers").
FOREIGN_LAYER_PREFIXES = (
    "application/vnd.docker.image.rootfs.foreign.",
    "application/vnd.oci.image.layer.nondistributable.",
)

# Layers that add no files: the gzipped and the plain empty tar archives.
EMPTY_LAYERS = frozenset(
    {
        "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4",
        "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
    }
)


def is_foreign_layer(media_type: str) -> bool:
    return media_type.startswith(FOREIGN_LAYER_PREFIXES)


def base_media_type(content_type: str | None) -> str:
    """`application/x; charset=...` → `application/x` (empty for None)."""
    return (content_type or "").split(";", 1)[0].strip().lower()
