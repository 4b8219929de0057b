"""Parse the raw request path into what a Hub URL names; refuse anything else.

Routing happens on the raw (still percent-encoded) path: revisions such as ``refs/pr/1``
arrive as ``refs%2Fpr%2F1`` and file names may contain ``%2F``-free ``# % ? + &`` and unicode.
Every piece goes through ``names`` validation, so traversal in any form is a 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from hfpull.errors import UnsafeInputError, UsageError
from hfpull.models import RepoRef
from hfpull.names import check_repo_path, validate_repo_id, validate_revision

_PLURALS = {"models": "model", "datasets": "dataset", "spaces": "space"}


class BadRequest(Exception):
    """The request line names something no Hub URL names (400)."""


@dataclass(frozen=True)
class Resolve:
    repo: RepoRef
    revision: str
    path: str


@dataclass(frozen=True)
class Api:
    repo: RepoRef
    revision: str | None  # None: the repo's default branch
    rest: str  # "" (info), "revision", "tree/<path>", ...


def parse(raw_path: str) -> Resolve | Api | None:
    """Resolve / Api for Hub URLs, None for paths the mirror does not know (404)."""
    if not raw_path.startswith("/") or raw_path.startswith("//") or "\x00" in raw_path:
        raise BadRequest("not a path")
    if "%00" in raw_path or "\\" in unquote(raw_path):
        raise BadRequest("NUL or backslash in the path")
    parts = raw_path[1:].split("/")
    try:
        if parts[0] == "api":
            return _api(parts[1:])
        return _resolve(parts)
    except (UnsafeInputError, UsageError) as exc:
        raise BadRequest(str(exc)) from None


def _resolve(parts: list[str]) -> Resolve | None:
    repo_type = "model"
    if parts and parts[0] in ("datasets", "spaces"):
        repo_type, parts = _PLURALS[parts[0]], parts[1:]
    if "resolve" not in parts[1:3]:
        return None
    at = parts.index("resolve", 1)
    if len(parts) < at + 3:
        return None
    repo_id = validate_repo_id("/".join(unquote(p) for p in parts[:at]))
    revision = validate_revision(unquote(parts[at + 1]))
    path = "/".join(unquote(p) for p in parts[at + 2 :])
    if not path:
        return None
    return Resolve(RepoRef(repo_id, repo_type), revision, check_repo_path(path))


def _api(parts: list[str]) -> Api | None:
    if len(parts) < 3 or parts[0] not in _PLURALS:
        return None
    repo_type = _PLURALS[parts[0]]
    rest = parts[1:]
    # {ns}/{name} or a bare {name}: the namespace form has a second segment that is not a verb
    verbs = ("revision", "tree", "paths-info", "refs")
    width = 1 if len(rest) == 1 or rest[1] in verbs else 2
    repo_id = validate_repo_id("/".join(unquote(p) for p in rest[:width]))
    rest = rest[width:]
    repo = RepoRef(repo_id, repo_type)
    if not rest:
        return Api(repo, None, "")
    if rest[0] in ("revision", "tree") and len(rest) >= 2:
        revision = validate_revision(unquote(rest[1]))
        tail = "/".join(unquote(p) for p in rest[2:])
        if tail:
            check_repo_path(tail)
        return Api(repo, revision, rest[0] + ("/" + tail if tail else ""))
    if rest[0] == "paths-info" and len(rest) == 2:  # POST, paths in the form body
        return Api(repo, validate_revision(unquote(rest[1])), "paths-info")
    if rest[0] == "refs" and len(rest) == 1:
        return Api(repo, None, "refs")
    return None
