"""Wiring: the only place that builds the application.

`build_services` opens the database and blob store and assembles authentication and
authorization; `build_app` mounts every HTTP surface (OCI `/v2/`, the Kubernetes-style
API, health and version) on one Starlette app. Granian workers import
`create_app_from_env`, which rebuilds the settings from the environment the `serve`
command exported, so each worker process has its own engine and connection pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from imageregistry.apiserver.api_routes import api_routes
from imageregistry.apiserver.version import version
from imageregistry.auth.authorizer import Authorizer
from imageregistry.auth.cluster import kubeconfig
from imageregistry.auth.cluster.authenticator import TokenReviewAuthenticator
from imageregistry.auth.cluster.authorizer import SubjectAccessReviewAuthorizer
from imageregistry.auth.cluster.client import ClusterClient
from imageregistry.auth.epoch import IdentityEpoch
from imageregistry.auth.rbac_store import build_authorizer
from imageregistry.auth.refresh import RefreshTokens
from imageregistry.auth.requestheader import HeaderNames, RequestHeaderAuthenticator
from imageregistry.auth.throttle import LoginThrottle
from imageregistry.auth.tokens import DEFAULT_AUDIENCE, TokenSigner, generate_signing_key
from imageregistry.blobport.links import BlobLinks, new_link_key
from imageregistry.blobport.server import blob_port
from imageregistry.changefeed import ChangeFeed, WatchSlots
from imageregistry.clock import system_clock
from imageregistry.compaction import compacting_change_log
from imageregistry.config import Settings, load_settings
from imageregistry.draining import Draining, draining_marker
from imageregistry.frontproxy.listener import front_proxy_listener, server_context
from imageregistry.frontproxy.middleware import FrontProxyMiddleware
from imageregistry.frontproxy.trust import FrontProxyTrust, front_proxy_trust
from imageregistry.health import health_routes
from imageregistry.metadata.db import Database
from imageregistry.metadata.engine import create as create_engine
from imageregistry.metadata.engine import open_engine
from imageregistry.metadata.manifest_pull import PullTimes
from imageregistry.metadata.tokens import (
    BLOB_LINK_KEY,
    PREVIOUS_SIGNING_KEYS,
    SIGNING_KEY,
    RefreshTokenStore,
    ServiceAccountLookup,
    TokenStore,
    get_or_create_secret,
    get_secret,
    split_pem,
)
from imageregistry.metadata.upload_locks import UploadLocks
from imageregistry.notifications import sender as notification_sender
from imageregistry.notifications.config import endpoints as notification_endpoints
from imageregistry.notifications.events import Source
from imageregistry.notifications.notifier import Notifier
from imageregistry.observability import metrics as obs
from imageregistry.observability import requestid, sources
from imageregistry.observability.audit import Auditor, build_auditor
from imageregistry.observability.endpoint import PATH, Scraper, metrics_routes
from imageregistry.observability.listener import metrics_listener
from imageregistry.observability.middleware import MetricsMiddleware
from imageregistry.observability.ports import NotingLinks, PortObserver
from imageregistry.oci.extension_routes import signature_routes
from imageregistry.oci.inline_pull import InlinePullLayer
from imageregistry.oci.pull import ManifestPull
from imageregistry.oci.signatures import SignatureHeaderMiddleware
from imageregistry.oci.v2_routes import build_registry, registry_routes
from imageregistry.prune.scheduler import scheduled_pruning
from imageregistry.services import Services
from imageregistry.storage import open_blob_store
from imageregistry.tuning.affinity import runtime_affinity


def build_services(settings: Settings, *, migrate: bool = True) -> Services:
    """Open everything; `migrate=False` in workers, whose supervisor already migrated."""
    engine = open_engine(settings.database_url) if migrate else create_engine(settings.database_url)
    metrics = obs.from_environment()
    sources.instrument_engine(engine, metrics)
    db = Database(engine)
    key_pem = get_or_create_secret(db, SIGNING_KEY, lambda: generate_signing_key().decode())
    previous = split_pem(get_secret(db, PREVIOUS_SIGNING_KEYS) or "")
    passwords = None
    if settings.htpasswd_file:
        from imageregistry.auth.htpasswd import HtpasswdFile

        passwords = HtpasswdFile(Path(settings.htpasswd_file))
    token_store, signer = (
        TokenStore(db, system_clock),
        TokenSigner(key_pem.encode(), previous_public_keys_pem=previous),
    )
    accounts = ServiceAccountLookup(db)
    authn = sources.CountingAuthenticator(
        metrics,
        token_store,
        signer,
        DEFAULT_AUDIENCE,
        passwords=passwords,
        service_accounts=accounts,
        epoch=IdentityEpoch(settings.data_dir / "run" / "identity-epoch"),
        throttle=LoginThrottle(settings.failed_logins_per_minute, 60.0),
    )
    refresh_tokens = RefreshTokens(
        RefreshTokenStore(db, system_clock),
        signer,
        DEFAULT_AUDIENCE,
        tokens=token_store,
        passwords=passwords,
        service_accounts=accounts,
        ttl_seconds=settings.refresh_token_ttl_seconds,
        clock=system_clock,
    )
    blob_links = None
    if settings.blob_listen:
        link_key = get_or_create_secret(db, BLOB_LINK_KEY, new_link_key)
        blob_links = BlobLinks(
            bytes.fromhex(link_key), settings.blob_listen, settings.blob_public_url
        )
    services = Services(
        settings=settings,
        db=db,
        blobs=sources.InstrumentedBlobStore(
            open_blob_store(
                settings.storage_url,
                fsync=settings.blob_fsync,
                direct_io=settings.blob_direct_io,
                s3=settings.storage_s3,
                session_locks=UploadLocks(db).try_acquire,
            ),
            metrics,
        ),
        authn=authn,
        authz=sources.CountingAuthorizer(build_authorizer(db).store, metrics),
        clock=system_clock,
        changes=ChangeFeed(db),
        watches=WatchSlots(settings.watch_max_per_user, settings.watch_max_total),
        blob_links=blob_links,
        refresh_tokens=refresh_tokens,
        metrics=metrics,
        notifier=_notifier(settings, db),
        audit=build_auditor(settings),
    )
    if settings.auth_mode == "kubernetes":
        cluster_authn, cluster_authz = cluster_auth(settings, signer, metrics)
        services = dataclasses.replace(
            services, authn=cluster_authn, authz=cluster_authz, refresh_tokens=None
        )
    return services


def cluster_auth(
    settings: Settings, signer: TokenSigner, metrics: obs.Metrics
) -> tuple[TokenReviewAuthenticator, Authorizer]:
    """`auth_mode: kubernetes`: the cluster authenticates (TokenReview) and authorizes
    (SubjectAccessReview), through one pooled client per process. The local token issuer
    and RBAC store are not used; the signer only makes the token endpoint's anonymous
    tokens."""
    client = ClusterClient(
        kubeconfig.load(settings.cluster_kubeconfig), settings.cluster_timeout_seconds
    )
    authn = sources.CountingTokenReviewAuthenticator(
        metrics,
        client,
        signer,
        DEFAULT_AUDIENCE,
        settings.cluster_audiences,
        success_ttl=settings.cluster_authn_cache_ttl_seconds,
        failure_ttl=settings.cluster_authn_failure_cache_ttl_seconds,
        cache_size=settings.cluster_cache_size,
    )
    authz = SubjectAccessReviewAuthorizer(
        client,
        allowed_ttl=settings.cluster_authz_allowed_ttl_seconds,
        denied_ttl=settings.cluster_authz_denied_ttl_seconds,
        cache_size=settings.cluster_cache_size,
    )
    return authn, sources.CountingDecisions(authz, metrics)


def _notifier(settings: Settings, db: Database) -> Notifier | None:
    endpoints = notification_endpoints(settings.notifications)
    if not endpoints:
        return None
    source = Source.for_port(settings.port)
    return Notifier(db, endpoints, source, settings.public_url, system_clock)


def build_app(services: Services) -> Starlette:
    trust = front_proxy_trust(services.settings)
    draining = Draining(draining_marker(services.settings.data_dir / "run", os.getppid()))
    routes: list[BaseRoute] = [
        *health_routes(services.db, services.blobs, draining),
        Route("/version", version, methods=["GET"]),
    ]
    # The one manifest pull decision, shared by the router and the layer that answers
    # pulls on the event loop (docs/architecture.md, "Request flow").
    pull = ManifestPull(services.db, services.authz, services.pull_times, services.clock)
    registry = build_registry(services, pull)  # the OCI surfaces' one set of collaborators
    routes += signature_routes(registry)
    routes += registry_routes(registry)
    routes += api_routes(services)
    metrics = services.metrics or obs.Metrics()
    auditor = services.audit
    scraper = Scraper(services.authn, services.authz, metrics)
    routes += metrics_routes(scraper)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        settings = services.settings
        async with (
            runtime_affinity(settings.cpu_affinity, settings.workers, settings.data_dir / "run"),
            scheduled_pruning(services.db, services.pruner, services.clock, services.audit),
            services.changes.running(),
            compacting_change_log(services.db, services.clock, settings.watch_history_seconds),
            _blob_port(services),
            flushing_pull_times(services.pull_times, settings.pull_times_flush_seconds),
            sources.refreshing_totals(services.db, metrics, _serving_cert(settings)),
            sources.flushing(metrics, obs.FLUSH_SECONDS),
            _metrics_listener(settings, scraper, auditor),
            _front_proxy_listener(settings, _app, trust),
            _notifications(services),
        ):
            yield
        pull.close()  # the event loop's own SQLite connection, opened by inline pulls
        services.db.dispose()
        if auditor is not None:
            auditor.writer.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(MetricsMiddleware, metrics=metrics, auditor=auditor),
            Middleware(
                FrontProxyMiddleware,
                headers=_request_header_names(services.settings, trust),
                authenticator=_request_header_authenticator(trust),
            ),
            Middleware(
                InlinePullLayer,
                pull=pull,
                gate=registry.gate,
                notifier=services.notifier,
            ),
            Middleware(SignatureHeaderMiddleware),
        ],
    )
    app.state.services = services
    return app


@contextlib.asynccontextmanager
async def flushing_pull_times(pull_times: PullTimes, interval: float) -> AsyncIterator[None]:
    """Write the buffered pull times every `interval` seconds and once more on the way out
    (a graceful shutdown loses none; a crash loses at most the last interval's)."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(pull_times.flush)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(pull_times.flush)


def _notifications(services: Services) -> contextlib.AbstractAsyncContextManager[None]:
    if services.notifier is None:
        return contextlib.nullcontext()
    run_dir = services.settings.data_dir / "run"
    return notification_sender.running(services.notifier, services.metrics, run_dir)


def _metrics_listener(
    settings: Settings, scraper: Scraper, auditor: Auditor | None
) -> contextlib.AbstractAsyncContextManager[None]:
    if not settings.metrics_listen:
        return contextlib.nullcontext()
    # request ids and audit events as on the main port; not in the request series
    observer = PortObserver(None, auditor, "metrics", PATH)
    return metrics_listener(settings.metrics_listen, scraper, observer)


def _request_header_names(settings: Settings, trust: FrontProxyTrust | None) -> HeaderNames:
    """The contract's headers, stripped from every request of every port."""
    if trust is not None:
        return trust.header_names()
    return HeaderNames(
        settings.requestheader_username_headers,
        settings.requestheader_group_headers,
        settings.requestheader_extra_headers_prefix,
    )


def _request_header_authenticator(
    trust: FrontProxyTrust | None,
) -> RequestHeaderAuthenticator | None:
    """The front-proxy contract, when the aggregated-API port is on (only that port's
    requests carry a client certificate)."""
    if trust is None:
        return None
    return RequestHeaderAuthenticator(trust.config, ca_file=trust.ca)


def _front_proxy_listener(
    settings: Settings, app: Starlette, trust: FrontProxyTrust | None
) -> contextlib.AbstractAsyncContextManager[None]:
    if trust is None:
        return contextlib.nullcontext()
    cert = _serving_cert(settings)
    key = settings.tls_private_key_file or settings.data_dir / "tls" / "serving.key"
    context = server_context(str(cert), str(key))
    return front_proxy_listener(settings.front_proxy_listen, app, context, trust.ca)


def _serving_cert(settings: Settings) -> Path | None:
    if settings.plain_http:
        return None
    return Path(settings.tls_cert_file or settings.data_dir / "tls" / "serving.crt")


def _blob_port(services: Services) -> contextlib.AbstractAsyncContextManager[None]:
    if services.blob_links is None:
        return contextlib.nullcontext()
    # the same request ids, series and audit events as the main port's requests
    observe = PortObserver(services.metrics, services.audit, "blobport", "/blobs/{digest}")
    return blob_port(NotingLinks.wrapping(services.blob_links), services.blobs, observe)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Our loggers write to stderr beside Granian's, in its format (or one JSON object per
    line with `log_format: json`), at `--log-level`, naming the request id of the request
    being handled."""
    logger = logging.getLogger("imageregistry")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(requestid.formatter(log_format))
        handler.addFilter(requestid.RequestIdFilter())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())


def create_app_from_env() -> Starlette:
    """Granian's factory entry point (settings come from the environment)."""
    settings = load_settings({}, env=os.environ)
    configure_logging(settings.log_level, settings.log_format)
    return build_app(build_services(settings, migrate=False))
