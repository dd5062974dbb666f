"""A read-only view of a Barman Cloud object store (S3 API): list and get, nothing else.

Layout written by barman-cloud-backup and barman-cloud-wal-archive (barman/cloud.py,
``CloudBackupUploader._upload_backup_info`` and ``CloudInterface`` paths):
``<prefix>/<server>/base/<backup_id>/{backup.info,data.tar[.gz|...]}`` and
``<prefix>/<server>/wals/<timeline+log>/<segment>[.gz|.bz2|.snappy|...]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from drillkit.exceptions import InvalidInputError

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SERVER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass(frozen=True)
class Destination:
    """``s3://bucket/path`` and a server name: where one server's backups and WAL live."""

    bucket: str
    prefix: str  # without leading or trailing slash; may be empty
    server_name: str

    @classmethod
    def parse(cls, url: str, server_name: str) -> Destination:
        parsed = urlparse(str(url))
        if parsed.scheme != "s3" or not parsed.netloc:
            raise InvalidInputError(
                f"catalog.destination {url!r} is not an s3://bucket/path URL; give the "
                "destinationPath barman-cloud-backup writes to"
            )
        if not _BUCKET_RE.match(parsed.netloc):
            raise InvalidInputError(
                f"catalog.destination bucket {parsed.netloc!r} is not a valid bucket name "
                "(3-63 lowercase letters, digits, dots and dashes)"
            )
        if not _SERVER_RE.match(str(server_name or "")):
            raise InvalidInputError(
                f"catalog.server_name {server_name!r} is not a Barman server name: use the "
                "serverName the backups were taken with (letters, digits, '_', '.', '-')"
            )
        return cls(bucket=parsed.netloc, prefix=parsed.path.strip("/"), server_name=server_name)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, self.server_name, *parts) if p)


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    etag: str


class ObjectStoreReader:
    """List and get objects; the only two S3 operations drillkit ever sends to a store."""

    def __init__(
        self, *, endpoint_url: str | None, credentials: Mapping[str, str] | None = None
    ) -> None:
        self.endpoint_url = endpoint_url
        self.credentials = dict(credentials or {})
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            creds = self.credentials
            session = boto3.session.Session(
                aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
                aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
                aws_session_token=creds.get("AWS_SESSION_TOKEN"),
                region_name=creds.get("AWS_DEFAULT_REGION") or creds.get("AWS_REGION"),
            )
            self._client = session.client(
                "s3",
                endpoint_url=self.endpoint_url,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}),
            )
        return self._client

    def list(self, bucket: str, prefix: str) -> Iterator[StoredObject]:
        paginator = self._s3().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield StoredObject(key=obj["Key"], size=int(obj["Size"]), etag=obj["ETag"])

    def get(self, bucket: str, key: str) -> bytes:
        return bytes(self._s3().get_object(Bucket=bucket, Key=key)["Body"].read())

    def download(self, bucket: str, key: str, path: str) -> None:
        """Stream one object to a local file (a plain GET; no multipart writes)."""
        body = self._s3().get_object(Bucket=bucket, Key=key)["Body"]
        with open(path, "wb") as handle:
            for chunk in iter(lambda: body.read(1 << 20), b""):
                handle.write(chunk)


def describe_client_error(exc: Exception, destination: Destination) -> str:
    """A sentence for a botocore error, without credentials (botocore never prints secrets)."""
    code = ""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
    if code in ("NoSuchBucket",):
        return (
            f"bucket {destination.bucket} does not exist at the endpoint; check catalog.destination"
        )
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
        return (
            f"the object store refused access to {destination.url} ({code}): check the "
            "credentials (aws_conn_id, or the AWS_* environment of the worker)"
        )
    return f"could not read {destination.url}: {type(exc).__name__}: {exc}"
