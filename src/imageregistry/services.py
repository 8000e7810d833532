"""The long-lived collaborators every HTTP surface receives from `server.py`.

There are no module-level singletons: `server.build_services` constructs one `Services`
value and `server.build_app` hands it to the route builders of each surface (`oci`,
`apiserver`). Tests build
their own with in-memory fakes where that is enough. Each `Services` keeps the process's
one `PullTimes` buffer over its database (`metadata.manifest_pull`), which the server's
lifespan flushes, and its one `Pruner`, which the API's operation resources and the
scheduled pruner share.

This is the composition root's value: core modules (`prune`, `signatures`, `content`,
`auth`, `metadata`) never import it; they take the database, blob store, clock and
settings they use as constructor arguments, and `server.py` (or a route builder it calls)
hands them over (docs/architecture.md#wiring).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from imageregistry.auth.authn import Authenticator
from imageregistry.auth.authorizer import Authorizer
from imageregistry.auth.refresh import RefreshTokens
from imageregistry.blobport.links import BlobLinks
from imageregistry.changefeed import ChangeFeed, WatchSlots
from imageregistry.clock import Clock
from imageregistry.config import Settings
from imageregistry.metadata.db import Database
from imageregistry.metadata.manifest_pull import PullTimes
from imageregistry.notifications.notifier import Notifier
from imageregistry.observability.audit import Auditor
from imageregistry.observability.metrics import Metrics
from imageregistry.prune.gc import GcSettings
from imageregistry.prune.service import Pruner
from imageregistry.storage.driver import BlobStore


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    blobs: BlobStore
    authn: Authenticator
    authz: Authorizer
    clock: Clock
    changes: ChangeFeed  # the process's one change-log poller (watches)
    watches: WatchSlots  # caps on concurrent watches
    blob_links: BlobLinks | None = None  # set when the blob port is on (`blob_listen`)
    refresh_tokens: RefreshTokens | None = None  # None: no `access_type=offline` grants
    metrics: Metrics | None = None  # None: nothing is measured (unit tests)
    audit: Auditor | None = None  # None: no audit log (`audit_log_path` unset)
    notifier: Notifier | None = None  # None: no event notifications (none configured)
    pull_times: PullTimes = field(init=False, repr=False, compare=False)
    pruner: Pruner = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pull_times", PullTimes(self.db))
        object.__setattr__(self, "pruner", _pruner(self))


def _pruner(services: Services) -> Pruner:
    settings = services.settings
    gc = GcSettings(
        upload_max_age=timedelta(seconds=settings.upload_max_age_seconds),
        blob_grace=timedelta(seconds=settings.gc_grace_seconds),
        reconcile_grace=timedelta(seconds=settings.reconcile_grace_seconds),
    )
    return Pruner(
        services.db,
        services.blobs,
        services.clock,
        gc,
        [settings.registry_host],
        services.metrics,
    )
