"""The "CDN" listener: serves LFS blobs by sha256 behind expiring HMAC-signed URLs."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from .replies import Reply, Request, text_reply

if TYPE_CHECKING:
    from .server import FakeHub


class Signer:
    def __init__(self) -> None:
        self._secret = os.urandom(32)

    def sign(self, sha256: str, expires: str) -> str:
        return hmac.new(self._secret, f"{sha256}:{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, cdn_url: str, sha256: str, expires: str, filename: str) -> str:
        """Signed blob URL. Like the real CDN URLs it names the file in the query, which lets a
        fault with ``match="model.safetensors"`` hit the CDN request too."""
        disposition = quote(f'attachment; filename="{filename}"', safe="")
        sig = self.sign(sha256, expires)
        return (
            f"{cdn_url}/cdn/{sha256}?expires={expires}&sig={sig}"
            f"&response-content-disposition={disposition}"
        )

    def valid(self, sha256: str, expires: str, sig: str) -> bool:
        return hmac.compare_digest(self.sign(sha256, expires), sig)


def _s3_error(status: int, code: str, message: str) -> Reply:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>\n"
    )
    return text_reply(status, body, "application/xml")


class CdnApi:
    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub

    def route(self, req: Request, applied: list[str]) -> Reply:
        segs = req.segments
        if req.method not in ("GET", "HEAD") or len(segs) != 2 or segs[0] != "cdn":
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        sha256, expires, sig = segs[1], req.query.get("expires", ""), req.query.get("sig", "")
        if not self.hub.signer.valid(sha256, expires, sig):
            return _s3_error(403, "SignatureDoesNotMatch", "The request signature is invalid.")
        try:
            deadline = float(expires)
        except ValueError:
            return _s3_error(403, "AccessDenied", "Invalid expires parameter")
        if time.time() >= deadline:
            return _s3_error(403, "AccessDenied", "Request has expired")
        blob = self.hub.store.blob_by_sha256(sha256)
        if blob is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        headers = {
            "ETag": f'"{sha256}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        return Reply(200, headers, blob, etag=headers["ETag"])
