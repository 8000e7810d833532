"""Unfinished multipart uploads in the bucket: list them and abort them (botocore).

The ``s3`` driver streams every staged append (and every commit of several segments)
as a multipart upload through ``obstore``, which aborts it on any error it sees. A process
killed mid-stream cannot: the upload's parts stay in the bucket, invisible to a listing of
objects and billed, until someone aborts them. ``obstore`` neither reports the upload id
when it starts one nor lists multipart uploads, so the ids cannot be recorded in the
database; instead GC asks the bucket (``ListMultipartUploads`` under the prefix, page by
page) and aborts those started longer ago than ``upload_max_age_seconds``
(docs/operations.md, "Blobs in S3-compatible object storage").

These two calls go through ``botocore``: it resolves credentials exactly as the data path
does (the settings' keys, else the environment, the shared credentials file, a
web-identity token file as with IRSA on Kubernetes, or instance metadata), which a
hand-signed request could not without re-implementing that chain. It is imported only
when GC or the reconciler first needs it (about 24 MiB and a second of start-up in the
process that runs GC, measured in
docs/benchmarks.md, "Unfinished multipart uploads: why botocore, and what it costs");
the data path never loads it. Its calls are blocking and run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from imageregistry.storage.driver import PendingWrite
from imageregistry.storage.errors import StorageUnavailable
from imageregistry.storage.s3config import S3Settings


class MultipartUploads:
    """``ListMultipartUploads`` and ``AbortMultipartUpload`` under one bucket/prefix."""

    def __init__(self, settings: S3Settings) -> None:
        self._settings = settings
        self._client: Any = None
        self._root = f"{settings.prefix}/" if settings.prefix else ""

    def _s3(self) -> Any:
        if self._client is None:
            import botocore.session  # type: ignore[import-untyped]
            from botocore.config import Config  # type: ignore[import-untyped]

            settings = self._settings
            config = Config(
                s3={"addressing_style": "path" if settings.path_style else "virtual"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            )
            # Empty credentials fall through to botocore's own chain, as obstore's do.
            self._client = botocore.session.get_session().create_client(
                "s3",
                region_name=settings.region,
                endpoint_url=settings.endpoint or None,
                aws_access_key_id=settings.access_key_id or None,
                aws_secret_access_key=settings.secret_access_key or None,
                aws_session_token=settings.session_token or None,
                verify=settings.ca_bundle or settings.tls_verify,
                config=config,
            )
        return self._client

    def _list_page(self, key_marker: str, upload_marker: str) -> dict[str, Any]:
        args: dict[str, Any] = {"Bucket": self._settings.bucket, "Prefix": self._root}
        if key_marker:
            args["KeyMarker"] = key_marker
        if upload_marker:
            args["UploadIdMarker"] = upload_marker
        page: dict[str, Any] = self._s3().list_multipart_uploads(**args)
        return page

    async def pending(self) -> AsyncIterator[PendingWrite]:
        """Every unfinished multipart upload under the prefix, page by page."""
        key_marker = upload_marker = ""
        while True:
            page = await self._call(
                "list_multipart_uploads", self._list_page, key_marker, upload_marker
            )
            for upload in page.get("Uploads") or ():
                key = str(upload["Key"])
                if not key.startswith(self._root):
                    continue
                yield PendingWrite(
                    key[len(self._root) :], str(upload["UploadId"]), _utc(upload["Initiated"])
                )
            if not page.get("IsTruncated"):
                return
            key_marker = str(page.get("NextKeyMarker") or "")
            upload_marker = str(page.get("NextUploadIdMarker") or "")
            if not key_marker and not upload_marker:
                return

    async def abort(self, write: PendingWrite) -> None:
        """Abort one upload; one already completed or aborted is not an error."""

        def call() -> None:
            client = self._s3()
            with contextlib.suppress(client.exceptions.NoSuchUpload):
                client.abort_multipart_upload(
                    Bucket=self._settings.bucket,
                    Key=self._root + write.key,
                    UploadId=write.upload_id,
                )

        await self._call("abort_multipart_upload", call)

    async def _call(self, what: str, function: Any, *args: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        try:
            return await asyncio.to_thread(function, *args)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "") or str(exc)
            raise StorageUnavailable(what, str(code)) from None
        except BotoCoreError as exc:
            raise StorageUnavailable(what, type(exc).__name__) from None


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
