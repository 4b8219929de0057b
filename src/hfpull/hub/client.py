"""The Hub API: revision -> commit and file list; repo search for "did you mean" hints.

Server JSON is validated and turned into frozen dataclasses here, at the boundary.
"""

from __future__ import annotations

import difflib
import itertools
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from hfpull.errors import HfpullError, RepoNotFoundError, UnsafeInputError
from hfpull.hub.http import (
    describe_transport_error,
    error_from_response,
    host_of,
    is_unreachable,
    parse_retry_after,
    request_following_redirects,
    tls_error,
)
from hfpull.hub.sources import Failure, Outcome, RetryPolicy, Source, SourcePool
from hfpull.models import RemoteFile, RepoRef, Snapshot
from hfpull.names import (
    check_commit,
    check_path_set,
    check_repo_path,
    check_sha256,
    is_git_sha1,
    is_size,
)
from hfpull.settings import Settings

MAX_JSON_BYTES = 64 << 20
MAX_TREE_PAGES = 10_000
# The revision API's `siblings` may be cut short on very large repos; past this many entries
# hfpull lists the repo with the paginated tree API instead.
SIBLINGS_TRUST_LIMIT = 1000


class HubClient:
    def __init__(
        self,
        settings: Settings,
        pool: SourcePool,
        policy: RetryPolicy,
        session: Callable[[], requests.Session],
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.policy = policy
        self.session = session

    # -- public -------------------------------------------------------------------------

    def resolve(self, repo: RepoRef, revision: str) -> Snapshot:
        """Pin ``revision`` to a commit and list every file at that commit."""
        what = f"{repo.repo_id}@{revision}"
        path = f"/api/{repo.api_plural}/{repo.repo_id}/revision/{quote(revision, safe='')}"
        data, source = self._get_json(path + "?blobs=true", what)
        if not isinstance(data, dict):
            raise UnsafeInputError(f"{source.host} sent a malformed revision answer for {what}")
        commit = check_commit(data.get("sha"), f"revision answer for {what}")
        files = _files_from_siblings(data.get("siblings"))
        if files is None:
            files = self.list_tree(repo, commit)
        return Snapshot(repo, revision, commit, tuple(sorted(files, key=lambda f: f.path)))

    def list_tree(self, repo: RepoRef, commit: str) -> list[RemoteFile]:
        """Every file at ``commit`` from the paginated tree API (pages follow ``Link: next``)."""
        what = f"{repo.repo_id}@{commit[:12]} file list"
        path = f"/api/{repo.api_plural}/{repo.repo_id}/tree/{commit}?recursive=true&expand=false"
        entries: list[Any] = []
        seen_pages: set[str] = set()
        next_path: str | None = path
        source: Source | None = None
        while next_path is not None:
            if next_path in seen_pages or len(seen_pages) >= MAX_TREE_PAGES:
                raise UnsafeInputError(f"the file list of {what} loops or never ends")
            seen_pages.add(next_path)
            page, source, response = self._get_json_with_response(next_path, what, prefer=source)
            if not isinstance(page, list):
                raise UnsafeInputError(f"{source.host} sent a malformed file list for {what}")
            entries.extend(page)
            next_path = _next_page_path(response, source)
        return _files_from_tree(entries)

    def suggest(self, repo: RepoRef) -> list[str]:
        """Close repo ids from the search API, best first; empty when search is unavailable."""
        name = repo.repo_id.split("/")[-1]
        path = f"/api/{repo.api_plural}?search={quote(name, safe='')}&limit=50"
        try:
            data, _ = self._get_json(path, f"search for {name}", quick=True)
        except HfpullError:
            return []
        if not isinstance(data, list):
            return []
        ids = [d["id"] for d in data if isinstance(d, dict) and isinstance(d.get("id"), str)]
        ids = [i for i in ids if i != repo.repo_id]
        lowered = {i.lower(): i for i in ids}
        close = difflib.get_close_matches(repo.repo_id.lower(), list(lowered), n=3, cutoff=0.3)
        exact_name = [i for i in ids if i.split("/")[-1].lower() == name.lower()]
        ranked = [*exact_name, *(lowered[c] for c in close)]
        return list(dict.fromkeys(ranked))[:3]

    def not_found_with_hint(self, error: RepoNotFoundError, repo: RepoRef) -> RepoNotFoundError:
        suggestions = self.suggest(repo)
        if suggestions:
            error.hint = "did you mean " + " or ".join(suggestions) + "?"
        elif not self.settings.token:
            error.hint = "if the repo is private, pass --token or set HF_TOKEN"
        return error

    # -- plumbing -----------------------------------------------------------------------

    def _get_json(self, path: str, what: str, quick: bool = False) -> tuple[Any, Source]:
        data, source, _ = self._get_json_with_response(path, what, quick=quick)
        return data, source

    def _get_json_with_response(
        self, path: str, what: str, prefer: Source | None = None, quick: bool = False
    ) -> tuple[Any, Source, requests.Response]:
        """GET ``path`` from each source in order, retrying as ``sources.next_step`` says.

        A definitive answer (not found, gated...) from a mirror still lets the next source
        answer; the last definitive error is raised when no source succeeds.
        """
        sources = self.pool.active()
        if prefer in sources:
            sources.remove(prefer)
            sources.insert(0, prefer)  # keep paginating on the source that gave page one
        last_error: HfpullError | None = None
        last_problem: str | None = None
        for index, source in enumerate(sources):
            is_last = index == len(sources) - 1
            for attempt in itertools.count(1):
                try:
                    response = request_following_redirects(
                        self.session(),
                        "GET",
                        source.base_url + path,
                        token=self.settings.token,
                        trusted_origin=source.origin,
                        stream=True,
                        timeout=(self.settings.connect_timeout, self.settings.read_timeout),
                        same_origin=True,  # API answers never move hosts
                    )
                except requests.RequestException as exc:
                    last_problem = f"{source.host}: {describe_transport_error(exc)}"
                    certificate = tls_error(exc, source.host)
                    if certificate is not None:
                        last_error, failure = certificate, Failure(Outcome.TLS)
                    elif is_unreachable(exc):
                        failure = Failure(Outcome.UNREACHABLE)
                    else:
                        failure = Failure(Outcome.TRANSIENT)
                else:
                    if response.status_code == 200:
                        data = _read_json(response, source)
                        self.pool.succeeded(source)
                        return data, source, response
                    error = error_from_response(response, what)
                    response.close()
                    if error is not None:
                        last_error, failure = error, Failure(Outcome.ANSWER)
                    else:
                        last_problem = f"{source.host}: HTTP {response.status_code}"
                        failure = Failure(Outcome.TRANSIENT, parse_retry_after(response))
                retry = self.pool.settle(
                    source, failure, attempt, is_last=is_last, policy=self.policy, quick=quick
                )
                if retry is None:
                    break
                self.policy.sleep(retry.delay)
        if last_error is not None:
            raise last_error
        raise self.pool.exhausted_error(what, last_problem)


def _read_json(response: requests.Response, source: Source) -> Any:
    body = bytearray()
    for chunk in response.iter_content(1 << 16):
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            response.close()
            raise UnsafeInputError(f"{source.host} sent an oversized API response; refused")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise UnsafeInputError(f"{source.host} sent invalid JSON") from None


def _next_page_path(response: requests.Response, source: Source) -> str | None:
    """Path+query of the next page. A Link to another host (a mirror relaying the Hub's own
    absolute links) is re-based onto the source so the listing never leaves it."""
    link = response.links.get("next", {}).get("url")
    if not link:
        return None
    parts = urlsplit(link)
    base_path = urlsplit(source.base_url).path.rstrip("/")
    path = parts.path
    if parts.netloc and host_of(link) == source.host and base_path and path.startswith(base_path):
        path = path[len(base_path) :]
    return path + (f"?{parts.query}" if parts.query else "")


def _size(value: object, where: str) -> int:
    if not is_size(value):
        raise UnsafeInputError(f"server sent an invalid size {value!r} for {where!r}")
    return value


def _blob_id(value: object, where: str) -> str:
    if not is_git_sha1(value):
        raise UnsafeInputError(f"server sent an invalid git blob id {value!r} for {where!r}")
    return value


def _lfs_sha256(lfs: object, hash_key: str, size: int, path: str) -> str | None:
    """The sha256 of an LFS entry (``sha256`` in siblings, ``oid`` in the tree API)."""
    if lfs is None:
        return None
    if not isinstance(lfs, dict):
        raise UnsafeInputError(f"server sent malformed LFS info for {path!r}")
    if _size(lfs.get("size"), path) != size:
        raise UnsafeInputError(f"server sent two different sizes for {path!r}")
    return check_sha256(lfs.get(hash_key), path)


def _files_from_siblings(siblings: object) -> list[RemoteFile] | None:
    """Files from ``siblings`` when complete; None means "ask the tree API"."""
    if not isinstance(siblings, list) or len(siblings) >= SIBLINGS_TRUST_LIMIT:
        return None
    if not all(isinstance(s, dict) and "size" in s and "blobId" in s for s in siblings):
        return None
    files = []
    for s in siblings:
        path = check_repo_path(s.get("rfilename"))
        size = _size(s["size"], path)
        sha256 = _lfs_sha256(s.get("lfs"), "sha256", size, path)
        files.append(RemoteFile(path, size, _blob_id(s["blobId"], path), sha256))
    return _check_unique(files)


def _files_from_tree(entries: list[Any]) -> list[RemoteFile]:
    files = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise UnsafeInputError("server sent a malformed file list entry")
        if entry.get("type") != "file":
            check_repo_path(entry.get("path"))
            continue
        path = check_repo_path(entry.get("path"))
        size = _size(entry.get("size"), path)
        sha256 = _lfs_sha256(entry.get("lfs"), "oid", size, path)
        files.append(RemoteFile(path, size, _blob_id(entry.get("oid"), path), sha256))
    return _check_unique(files)


def _check_unique(files: list[RemoteFile]) -> list[RemoteFile]:
    check_path_set([f.path for f in files])
    return files
