"""The ObjectStore protocol on S3 and S3-compatible stores (AWS, MinIO, Ceph RGW, SeaweedFS).

boto3 because it sends every conditional header the fleet relies on (PutObject and
CompleteMultipartUpload with If-None-Match / If-Match), UploadPartCopy with a range, and has
the retry and timeout knobs a mirror needs; it is imported only when a store is made, so
``hfpull --help`` does not pay for it. Credentials come from boto3's usual chain
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, profiles, instance roles).

Errors become the protocol's: an unreachable, slow, throttling or failing store is
StoreUnavailable (the mirror answers 503), a lost condition PreconditionFailed, refused
credentials or a missing bucket an AuthError/UsageError naming the bucket and endpoint;
never a credential in a message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from hfpull.blobstore.objects import ObjectInfo, PreconditionFailed, StoreUnavailable
from hfpull.errors import AuthError, HfpullError, NotFoundError, UsageError

PART_SIZE = 16 << 20  # multipart parts of upload_file (S3: ≥ 5 MiB, ≤ 10,000 parts)
MULTIPART_ABOVE = 64 << 20  # smaller files go in one PutObject
READ_CHUNK = 1 << 20  # get_range streams the body in pieces this big
POOL = 64  # connections: a mirror reads many blobs at once
T = TypeVar("T")

_PRECONDITION = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_AUTH = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403",
    "ExpiredToken", "InvalidToken", "AllAccessDisabled",
}  # fmt: skip


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str = ""
    endpoint: str | None = None  # an S3-compatible service; None: AWS
    region: str | None = None

    @classmethod
    def from_url(cls, url: str, endpoint: str | None = None, region: str | None = None) -> S3Config:
        """``s3://bucket/some/prefix``; UsageError for anything else."""
        parts = urlsplit(url)
        bucket = parts.netloc
        if parts.scheme != "s3" or not bucket or parts.query or parts.fragment or "@" in bucket:
            raise UsageError(f"--store: {url[:80]!r} is not an s3://bucket/prefix URL")
        if not (3 <= len(bucket) <= 63) or not all(c.isalnum() or c in ".-_" for c in bucket):
            raise UsageError(f"--store: {bucket[:80]!r} is not a valid bucket name")
        prefix = parts.path.strip("/")
        if ".." in prefix.split("/"):
            raise UsageError("--store: the prefix may not contain '..'")
        return cls(bucket, f"{prefix}/" if prefix else "", endpoint or None, region or None)

    @property
    def where(self) -> str:
        """The store as it may be printed (an endpoint's user:password@ part never is)."""
        url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        if not self.endpoint:
            return url
        scheme, sep, rest = self.endpoint.partition("://")
        host, slash, path = rest.partition("/")
        host = host.rpartition("@")[2]
        return f"{url} at {scheme}{sep}{host}{slash}{path}"


class S3ObjectStore:
    def __init__(self, config: S3Config) -> None:
        import boto3
        from botocore.config import Config

        self.config = config
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint,
            region_name=config.region,
            config=Config(
                s3={"addressing_style": "path" if config.endpoint else "auto"},
                max_pool_connections=POOL,
                connect_timeout=3,
                read_timeout=20,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    # -- errors ---------------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], **kwargs: Any) -> T:
        """One S3 call with its errors turned into the protocol's."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return fn(Bucket=self.config.bucket, **kwargs)
        except ClientError as exc:
            raise self._translate(exc) from None
        except NoCredentialsError:
            raise AuthError(
                f"no S3 credentials for {self.config.where} (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or a profile)"
            ) from None
        except BotoCoreError as exc:  # connection refused, timeouts, bad endpoint
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> StoreUnavailable:
        """Connection refused, timeouts, a bad endpoint (never the credentials in the text)."""
        return StoreUnavailable(f"object store {self.where} did not answer ({type(exc).__name__})")

    def _translate(self, exc: Any) -> HfpullError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _PRECONDITION or status in (409, 412):
            return PreconditionFailed(f"{code or status}: someone else wrote it first")
        if code == "NoSuchBucket":
            return UsageError(f"bucket {self.config.bucket!r} does not exist at {self.where}")
        if code in _NOT_FOUND or status == 404:
            return NotFoundError(f"not in the object store ({code or status})")
        if code in _AUTH or status in (401, 403):
            return AuthError(f"the object store {self.where} refused the credentials ({code})")
        return StoreUnavailable(f"object store {self.where} answered {status} {code}".strip())

    @property
    def where(self) -> str:
        return self.config.where

    def _key(self, name: str) -> str:
        return self.config.prefix + name

    # -- the protocol ---------------------------------------------------------------------

    def check(self) -> None:
        """One cheap call: is the bucket there, and are we let in?"""
        try:
            self._call(self._client.head_bucket)
        except NotFoundError:
            raise UsageError(
                f"bucket {self.config.bucket!r} does not exist at {self.where}"
            ) from None

    def head(self, name: str) -> ObjectInfo | None:
        try:
            found = self._call(self._client.head_object, Key=self._key(name))
        except NotFoundError:
            return None
        return ObjectInfo(
            name, int(found["ContentLength"]), found["ETag"], found["LastModified"].timestamp()
        )

    def get(self, name: str) -> tuple[bytes, str] | None:
        try:
            found = self._call(self._client.get_object, Key=self._key(name))
        except NotFoundError:
            return None
        return self._read_all(found["Body"]), found["ETag"]

    def _read_all(self, body: Any) -> bytes:
        try:
            return bytes(body.read())
        except Exception as exc:  # a body cut mid-way
            raise StoreUnavailable(f"object store {self.where}: read cut ({exc})") from None
        finally:
            body.close()

    def get_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        if end <= start:
            if self.head(name) is None:
                raise NotFoundError(f"{name} is not in the object store")
            return
        found = self._call(
            self._client.get_object, Key=self._key(name), Range=f"bytes={start}-{end - 1}"
        )
        body = found["Body"]
        left = end - start
        try:
            while left > 0:
                try:
                    chunk = body.read(min(READ_CHUNK, left))
                except Exception as exc:
                    raise StoreUnavailable(f"object store {self.where}: read cut ({exc})") from None
                if not chunk:
                    raise StoreUnavailable(f"object store {self.where}: {name} answered short")
                left -= len(chunk)
                yield chunk
        finally:
            body.close()

    def put(
        self, name: str, body: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        extra: dict[str, str] = {}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = if_match
        answer = self._call(self._client.put_object, Key=self._key(name), Body=body, **extra)
        return str(answer["ETag"])

    def upload_file(self, name: str, path: str, *, if_none_match: bool = False) -> str:
        size = Path(path).stat().st_size
        if size <= MULTIPART_ABOVE:
            with open(path, "rb") as handle:
                extra = {"IfNoneMatch": "*"} if if_none_match else {}
                answer = self._call(
                    self._client.put_object, Key=self._key(name), Body=handle, **extra
                )
                return str(answer["ETag"])
        upload_id = self.create_multipart(name)  # by hand: managed transfers drop If-None-Match
        try:
            parts = []
            with open(path, "rb") as handle:
                number = 1
                while chunk := handle.read(PART_SIZE):
                    parts.append((number, self.upload_part(name, upload_id, number, chunk)))
                    number += 1
            return self.complete_multipart(name, upload_id, parts, if_none_match=if_none_match)
        except BaseException:
            try:
                self.abort_multipart(name, upload_id)
            except HfpullError:
                pass  # left for list_multipart's clean-up
            raise

    def delete(self, name: str) -> None:
        try:
            self._call(self._client.delete_object, Key=self._key(name))
        except NotFoundError:
            pass

    def scan(self, prefix: str) -> Iterator[ObjectInfo]:
        skip = len(self.config.prefix)
        for page in self._pages("list_objects_v2", prefix):
            for item in page.get("Contents", ()):
                yield ObjectInfo(
                    item["Key"][skip:], int(item["Size"]), item["ETag"],
                    item["LastModified"].timestamp(),
                )  # fmt: skip

    def _pages(self, operation: str, prefix: str) -> Iterator[dict[str, Any]]:
        """The pages of a listing under ``prefix``; errors as in ``_call`` (pages are fetched
        as they are iterated, so the translation wraps the iteration)."""
        from botocore.exceptions import BotoCoreError, ClientError

        pages = self._client.get_paginator(operation).paginate(
            Bucket=self.config.bucket, Prefix=self._key(prefix)
        )
        try:
            yield from pages
        except ClientError as exc:
            raise self._translate(exc) from None
        except BotoCoreError as exc:
            raise self._unreachable(exc) from None

    def create_multipart(self, name: str) -> str:
        answer = self._call(self._client.create_multipart_upload, Key=self._key(name))
        return str(answer["UploadId"])

    def upload_part(self, name: str, upload_id: str, number: int, body: bytes) -> str:
        answer = self._call(
            self._client.upload_part, Key=self._key(name), UploadId=upload_id,
            PartNumber=number, Body=body,
        )  # fmt: skip
        return str(answer["ETag"])

    def upload_part_copy(
        self, name: str, upload_id: str, number: int, source: str, start: int, end: int
    ) -> str:
        answer = self._call(
            self._client.upload_part_copy, Key=self._key(name), UploadId=upload_id,
            PartNumber=number, CopySourceRange=f"bytes={start}-{end - 1}",
            CopySource={"Bucket": self.config.bucket, "Key": self._key(source)},
        )  # fmt: skip
        return str(answer["CopyPartResult"]["ETag"])

    def complete_multipart(
        self,
        name: str,
        upload_id: str,
        parts: list[tuple[int, str]],
        *,
        if_none_match: bool = False,
    ) -> str:
        extra = {"IfNoneMatch": "*"} if if_none_match else {}
        answer = self._call(
            self._client.complete_multipart_upload, Key=self._key(name), UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
            **extra,
        )  # fmt: skip
        return str(answer["ETag"])

    def abort_multipart(self, name: str, upload_id: str) -> None:
        try:
            self._call(self._client.abort_multipart_upload, Key=self._key(name), UploadId=upload_id)
        except NotFoundError:
            pass

    def list_multipart(self, prefix: str) -> Iterator[tuple[str, str]]:
        skip = len(self.config.prefix)
        for page in self._pages("list_multipart_uploads", prefix):
            for upload in page.get("Uploads", ()):
                yield upload["Key"][skip:], upload["UploadId"]
