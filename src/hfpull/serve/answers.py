"""Error answers the way the Hub gives them: a JSON body with ``X-Error-Code`` and
``X-Error-Message``, and the one mapping from hfpull's errors to status and code."""

from __future__ import annotations

import re

from aiohttp import web

from hfpull.blobstore.objects import StoreUnavailable
from hfpull.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfpullError,
    IntegrityError,
    NetworkError,
    NotFoundError,
    RepoNotFoundError,
    RevisionNotFoundError,
    UnsafeInputError,
)
from hfpull.serve.metadata import Offline

RETRY_AFTER = 5  # seconds a client is told to wait when the object store is down

# First match wins: subclasses before the classes they refine.
_STATUS_AND_CODE: tuple[tuple[type[BaseException], int, str], ...] = (
    (IntegrityError, 502, "UpstreamCorrupt"),
    (RepoNotFoundError, 404, "RepoNotFound"),
    (RevisionNotFoundError, 404, "RevisionNotFound"),
    (EntryNotFoundError, 404, "EntryNotFound"),
    (NotFoundError, 404, "RepoNotFound"),
    (GatedRepoError, 403, "GatedRepo"),
    (UnsafeInputError, 400, "BadRequest"),
    (Offline, 504, "Offline"),
    (StoreUnavailable, 503, "StoreUnavailable"),  # a NetworkError: before it
    (NetworkError, 502, "UpstreamUnavailable"),
    (HfpullError, 502, "UpstreamError"),
)


def status_and_code(error: BaseException) -> tuple[int, str]:
    """What a client is answered for this error (500 InternalError for a bug)."""
    for kind, status, code in _STATUS_AND_CODE:
        if isinstance(error, kind):
            return status, code
    return 500, "InternalError"


def error_answer(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    message = re.sub(r"[\r\n]", " ", message)[:300]
    return web.json_response(
        {"error": message}, status=status,
        headers={"X-Error-Code": code, "X-Error-Message": message, **(headers or {})},
    )  # fmt: skip


def failure_answer(error: BaseException) -> web.Response:
    """The answer for an error raised while serving (a bug's message stays private)."""
    status, code = status_and_code(error)
    message = str(error) if isinstance(error, HfpullError) else type(error).__name__
    headers = {"Retry-After": str(RETRY_AFTER)} if status == 503 else None
    return error_answer(status, code, message, headers)
