"""What the Kubernetes-style API's dispatcher, handlers and resources are handed.

`ApiCollaborators` is built once per app by `api_routes.api_collaborators`, the one place in
`apiserver` that takes the server's `Services` apart (docs/architecture.md#wiring). The
dispatcher, the endpoints, the usage reports and the resource catalog read its named
fields, so what each of them depends on is visible in one dataclass rather than hidden
behind the whole composition root.
"""

from __future__ import annotations

from dataclasses import dataclass

from imageregistry.auth.authn import Authenticator
from imageregistry.auth.authorizer import Authorizer
from imageregistry.changefeed import ChangeFeed, WatchSlots
from imageregistry.clock import Clock
from imageregistry.metadata.db import Database
from imageregistry.prune.service import Pruner


@dataclass(frozen=True)
class ApiCollaborators:
    """The API surface's collaborators and the two settings it reads."""

    db: Database
    authn: Authenticator
    authz: Authorizer
    clock: Clock
    changes: ChangeFeed  # the process's one change-log poller (watches)
    watches: WatchSlots  # caps on concurrent watches
    pruner: Pruner  # shared with the scheduled pruner
    cluster_mode: bool  # `auth_mode = kubernetes`: the cluster owns namespaces and RBAC
    registry_host: str  # the host image references are rendered with
