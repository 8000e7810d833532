"""`image-registry serve`: prepare the data dir, then run the app under Granian.

The main process migrates the schema, reconciles bootstrap RBAC, creates TLS material
and the admin kubeconfig on first start, then hands the settings to Granian workers via
the environment (each worker builds its own app with `server.create_app_from_env`).
SIGTERM (or SIGINT) first marks the server as draining, so `/readyz` answers 503 while
everything else is still served for `shutdown_delay_seconds` (time for a Kubernetes
Service's endpoints and kube-proxy to drop the pod, like kube-apiserver's
`--shutdown-delay-duration`); then Granian stops accepting connections and lets in-flight
requests, uploads included, finish. A second signal skips the delay. Uploads are staged
and only become visible on an atomic commit, so one cut off by a SIGKILL after the
termination grace never corrupts stored content and can be resumed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import click

from imageregistry.config import Settings, load_settings, settings_to_env
from imageregistry.configerror import ConfigurationError


@click.group()
def main() -> None:
    """Registry v2 server."""


READ_ONLY_NOTICE = (
    "The database is read-only: serving pulls and other reads; pushes and other changes"
    " are answered 503 until it takes writes again (bootstrap RBAC not reconciled)."
)


class ConfigurationRefused(click.ClickException):
    """`serve` refuses to start: one line on stderr, exit status 2 (a usage error)."""

    exit_code = 2

    def __init__(self, error: ConfigurationError) -> None:
        lines = (line.strip() for line in str(error).splitlines())
        super().__init__("; ".join(line for line in lines if line))


def _prepare_in_child(settings: Settings) -> tuple[str, str]:
    """Validate every setting (`serve_checks.validate`), then run `_prepare`, in a
    short-lived process: the Granian supervisor then never imports SQLAlchemy, Alembic,
    the S3 client or the TLS code, and stays small (it only supervises workers). Any
    problem comes back as a `ConfigurationError` before a worker exists.

    Forked, not spawned: this process has no threads yet, and a spawn context would leave
    multiprocessing's resource-tracker process (~12 MB) running beside the server."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(_validate_and_prepare, settings).result()


def _validate_and_prepare(settings: Settings) -> tuple[str, str]:
    from imageregistry.cli.serve_checks import validate

    validate(settings)
    return _prepare(settings)


def _prepare(settings: Settings) -> tuple[str, str]:
    """Run first-start tasks; return (cert, key) paths for TLS, or ("", "").

    Replicas sharing one PostgreSQL database take turns (`preparation_lock`)."""
    from sqlalchemy.exc import OperationalError

    from imageregistry.metadata.engine import preparation_lock

    try:
        with preparation_lock(settings.database_url):
            return _prepare_locked(settings)
    except OperationalError as exc:
        raise ConfigurationError(f"cannot open the database: {exc.orig}") from None


def _prepare_locked(settings: Settings) -> tuple[str, str]:
    from imageregistry.bootstrap import (
        ensure_admin_kubeconfig,
        reconcile_bootstrap_objects,
        shared_ca,
    )
    from imageregistry.metadata.db import Database, DatabaseReadOnly
    from imageregistry.metadata.engine import open_engine
    from imageregistry.pki import ensure_tls, wanted_sans

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(open_engine(settings.database_url))  # OperationalError: see `_prepare`
    try:
        if db.refuses_writes():
            click.echo(READ_ONLY_NOTICE, err=True)
        else:
            reconcile_bootstrap_objects(db)
        cert, key, ca_pem = "", "", None
        if not settings.plain_http:
            if settings.tls_cert_file and settings.tls_private_key_file:
                cert, key = settings.tls_cert_file, settings.tls_private_key_file
            else:
                tls_dir = settings.data_dir / "tls"
                files = ensure_tls(
                    tls_dir,
                    wanted_sans(settings.tls_san, settings.host),
                    shared_ca(db, tls_dir),
                )
                cert, key = str(files.cert), str(files.key)
                ca_pem = files.ca_cert.read_bytes()
        if settings.auth_mode == "kubernetes":
            _announce_cluster(settings)
            return cert, key  # no local identities: the cluster's are used
        try:
            written = ensure_admin_kubeconfig(db, settings.data_dir, settings.server_url, ca_pem)
        except DatabaseReadOnly:
            raise ConfigurationError(
                "the database is read-only, so the first start cannot record the"
                " cluster-admin identity: start once with a writable database"
            ) from None
        if written is not None:
            click.echo(
                f"Wrote the kubeconfig of the cluster-admin identity system:admin.\n"
                f"  export KUBECONFIG={written.resolve()}\n"
                f"  kubectl auth whoami   # or: ac whoami",
                err=True,
            )
        return cert, key
    finally:
        db.dispose()


def _announce_cluster(settings: Settings) -> None:
    """Cluster mode: say which cluster decides (its configuration was validated)."""
    from imageregistry.auth.cluster import kubeconfig

    connection = kubeconfig.load(settings.cluster_kubeconfig)
    click.echo(
        f"Cluster mode: tokens and access decided by the cluster at {connection.server}",
        err=True,
    )


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--listen", default=None, help="HOST:PORT (default 127.0.0.1:5000)")
@click.option("--database", default=None, help="sqlite:///PATH or postgresql://...")
@click.option("--storage", default=None, help="blob store (default: DATA_DIR/blobs)")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False))
@click.option("--workers", type=int, default=None)
@click.option("--plain-http", is_flag=True, default=None)
@click.option("--tls-cert-file", default=None)
@click.option("--tls-private-key-file", default=None)
@click.option("--tls-san", multiple=True)
@click.option("--htpasswd-file", default=None)
@click.option("--public-url", default=None)
@click.option("--log-level", default=None)
@click.option("--log-format", default=None, help="text (default) or json: the server's own logs.")
@click.option(
    "--blob-listen",
    default=None,
    help="HOST:PORT of the blob port: whole blobs of 1 MiB+ via sendfile (needs --plain-http).",
)
@click.option("--blob-public-url", default=None, help="How clients reach the blob port.")
@click.option(
    "--auth-mode",
    default=None,
    type=click.Choice(["local", "kubernetes"]),
    help="local (default): own identities and RBAC; kubernetes: the cluster's (TokenReview,"
    " SubjectAccessReview).",
)
@click.option(
    "--cluster-kubeconfig",
    default=None,
    help="kubeconfig of the cluster for --auth-mode kubernetes (default: in-cluster config).",
)
@click.option(
    "--metrics-listen",
    default=None,
    help="HOST:PORT serving /metrics in plain HTTP too (same authorization).",
)
@click.option(
    "--front-proxy-listen",
    default=None,
    help="HOST:PORT of the aggregated-API TLS port (requests client certificates).",
)
@click.option("--requestheader-client-ca-file", default=None)
@click.option("--requestheader-allowed-names", default=None, help="Comma-separated.")
@click.option("--requestheader-username-headers", default=None, help="Comma-separated.")
@click.option("--requestheader-group-headers", default=None, help="Comma-separated.")
@click.option("--requestheader-extra-headers-prefix", default=None, help="Comma-separated.")
@click.option(
    "--audit-log-path",
    default=None,
    help="Write audit.k8s.io/v1 events here, one JSON line each ('-': standard output).",
)
@click.option("--audit-policy-file", default=None, help="The audit.k8s.io/v1 Policy file.")
@click.option(
    "--audit-log-maxsize", type=int, default=None, help="Megabytes before rotation (100; 0: never)."
)
@click.option(
    "--audit-log-maxbackup", type=int, default=None, help="Rotated files kept (10; 0: all)."
)
def serve(config_file: str | None, tls_san: tuple[str, ...], **flags: object) -> None:
    """Run the registry and API server."""
    if tls_san:
        flags["tls_san"] = tls_san
    try:
        settings = load_settings(flags, config_file)
        cert, key = _prepare_in_child(settings)
    except ConfigurationError as exc:
        raise ConfigurationRefused(exc) from None
    os.environ.update(settings_to_env(settings))
    from granian.constants import Interfaces

    from imageregistry.observability.multiproc import MULTIPROC_ENV, prepare_multiprocess_dir

    # Before any worker exists: prometheus_client picks its multiprocess mode from this.
    os.environ[MULTIPROC_ENV] = str(prepare_multiprocess_dir(settings.data_dir))

    from imageregistry.draining import draining_marker

    marker = draining_marker(settings.data_dir / "run", os.getpid())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)  # a container restarts with the same pid
    server = _draining_server()(
        marker,
        settings.shutdown_delay_seconds,
        "imageregistry.server:create_app_from_env",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        ssl_cert=Path(cert) if cert else None,
        ssl_key=Path(key) if key else None,
        log_level=settings.log_level,
        backlog=2048,
        # A worker that dies (OOM kill, crash) is replaced; the supervisor only gives up
        # when the same worker dies again within seconds (Granian's crash-loop check).
        respawn_failed_workers=True,
        respawn_interval=1.0,
    )
    click.echo(f"Serving on {settings.server_url}", err=True)
    try:
        server.serve()
    finally:
        marker.unlink(missing_ok=True)
    sys.exit(0)


@main.command("rotate-secret")
@click.argument(
    "name", type=click.Choice(["token-signing-key", "blob-link-key", "serving-ca", "admin-token"])
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--database", default=None, help="sqlite:///PATH or postgresql://...")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False))
@click.option(
    "--revoke-old",
    is_flag=True,
    help="token-signing-key: refuse tokens signed with the old key at once (a leaked key).",
)
def rotate_secret(name: str, config_file: str | None, revoke_old: bool, **flags: object) -> None:
    """Replace a secret the replicas share; each replica uses it from its next start."""
    from sqlalchemy.exc import OperationalError

    from imageregistry.metadata.db import Database, DatabaseUnavailable
    from imageregistry.metadata.engine import open_engine
    from imageregistry.rotation import rotate

    try:
        settings = load_settings(flags, config_file)
        db = Database(open_engine(settings.database_url))
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    except OperationalError as exc:
        raise click.ClickException(f"cannot open the database: {exc.orig}") from None
    try:
        message = rotate(db, name, revoke_old=revoke_old)
    except DatabaseUnavailable as exc:
        raise click.ClickException(f"the database refused the change: {exc}") from None
    finally:
        db.dispose()
    click.echo(f"{message}. Restart every replica to use it.", err=True)


def _draining_server() -> type[Any]:
    """Granian's server class with the stop sequence described in the module docstring.

    Built in a function so the supervisor imports Granian only when it serves."""
    from granian import Granian

    class DrainingServer(Granian):  # type: ignore[misc,valid-type]
        def __init__(self, marker: Path, delay: int, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._draining_marker = marker
            self._shutdown_delay = delay
            self._draining = False

        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            stop = super().signal_handler_interrupt
            if self._draining or self._shutdown_delay <= 0:
                self._mark_draining()
                stop()
                return
            self._mark_draining()
            click.echo(
                f"Stopping: /readyz answers 503 now; no new connections after"
                f" {self._shutdown_delay} s, then in-flight requests finish",
                err=True,
            )
            timer = threading.Timer(self._shutdown_delay, stop)
            timer.daemon = True
            timer.start()

        def _respawn_workers(self, workers: Any, *args: Any, **kwargs: Any) -> Any:
            """Granian replaces a dead (or expired) worker: its live gauges go with it."""
            from imageregistry.observability.multiproc import MULTIPROC_ENV, mark_workers_dead

            old = [self.wrks[idx]._id() for idx in workers if idx < len(self.wrks)]
            try:
                return super()._respawn_workers(workers, *args, **kwargs)
            finally:
                mark_workers_dead(old, os.environ.get(MULTIPROC_ENV))

        def _mark_draining(self) -> None:
            self._draining = True
            with contextlib.suppress(OSError):  # readiness is best effort; stopping is not
                self._draining_marker.touch()

    return DrainingServer
