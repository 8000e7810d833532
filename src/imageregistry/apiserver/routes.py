"""Kubernetes-style API routes (placeholder until the API machinery lands)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from imageregistry.services import Services


def api_routes(services: Services) -> list[BaseRoute]:
    return []
