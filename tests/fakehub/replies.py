"""Request/reply values passed between the HTTP handler and the route tables."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import parse_qsl

from .store import Blob

CAPTIVE_PORTAL_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in to Wi-Fi</title></head>\n"
    b"<body><h1>Welcome to Airport Free Wi-Fi</h1>\n"
    b"<p>Please accept the terms of service to continue.</p></body></html>\n"
)


@dataclass(frozen=True)
class Request:
    server: str
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.raw_path.partition("?")[0]

    @cached_property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.raw_path.partition("?")[2], keep_blank_values=True))

    @property
    def segments(self) -> list[str]:
        """Raw (still percent-encoded) path segments, without the leading empty one."""
        return self.path.split("/")[1:]


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Blob = b""
    # Set only on file content: enables Range/If-Range and the hub-wide throttle.
    etag: str | None = None

    @property
    def size(self) -> int:
        return self.body.size if isinstance(self.body, Blob) else len(self.body)


def json_reply(obj: object, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    return Reply(status, all_headers, json.dumps(obj).encode())


def error_reply(
    status: int, code: str | None, message: str, headers: dict[str, str] | None = None
) -> Reply:
    extra = {"X-Error-Message": message, **(headers or {})}
    if code is not None:
        extra["X-Error-Code"] = code
    return json_reply({"error": message}, status, extra)


def text_reply(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Reply:
    return Reply(status, {"Content-Type": content_type}, text.encode())


def not_found() -> Reply:
    return error_reply(404, None, "Not Found")
