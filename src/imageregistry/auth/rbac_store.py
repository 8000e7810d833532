"""Builds the authorizer the server uses (RBAC over the objects table once it lands)."""

from __future__ import annotations

from imageregistry.auth.authorizer import Authorizer, MastersOnlyAuthorizer
from imageregistry.metadata.db import Database


def build_authorizer(db: Database) -> Authorizer:
    return MastersOnlyAuthorizer()
