"""OCI distribution routes (placeholder until the data plane lands)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from imageregistry.services import Services


def oci_routes(services: Services) -> list[BaseRoute]:
    return []
