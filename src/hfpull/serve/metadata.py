"""What upstream says about repos, cached: commits forever, branch names for a TTL.

Two kinds of answers are kept on disk, in the store's ``meta/`` folder:
- snapshots (commit + file list, validated by ``hub.client``) that resolve requests need;
- raw API answers (revision, tree pages) that clients read, with Xet fields stripped.
A name that is a 40-hex commit never changes, so its answer never expires. A branch or tag
answer is reused for ``ttl`` seconds, then revalidated; a client's ``Cache-Control:
no-cache`` forces that. When upstream fails (down, timeout, 429, 5xx) the last answer is
served and marked STALE. Not-found answers are kept for a short while.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfpull.errors import HfpullError, NetworkError, NotFoundError
from hfpull.models import RemoteFile, RepoRef, Snapshot
from hfpull.names import COMMIT_RE

NEGATIVE_TTL = 30.0


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]  # the ones worth keeping: content type, Link, X-Error-*
    cache: str  # HIT | MISS | STALE


class Offline(NetworkError):
    """--offline and the answer is not cached."""


class MetadataCache:
    def __init__(
        self,
        directory: Path,
        ttl: float,
        offline: bool,
        resolve: Callable[[RepoRef, str], Snapshot],
        fetch_api: Callable[[str], tuple[int, bytes, dict[str, str]]],
    ) -> None:
        self.directory = directory
        self.ttl = ttl
        self.offline = offline
        self._resolve = resolve
        self._fetch_api = fetch_api
        self._negative: dict[str, tuple[float, HfpullError]] = {}
        self._memory: dict[str, dict[str, Any]] = {}  # what is on disk, parsed once
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # -- snapshots for resolve requests ---------------------------------------------------

    def snapshot(
        self, repo: RepoRef, revision: str, revalidate: bool = False
    ) -> tuple[Snapshot, str]:
        key = f"snap/{repo.repo_type}/{repo.repo_id}/{revision}"
        with self._lock(key):
            saved = self._load(key)
            if saved is not None and self._fresh(revision, saved, revalidate):
                return _snapshot_from(repo, revision, saved), "HIT"
            if self.offline:
                if saved is not None:
                    return _snapshot_from(repo, revision, saved), "HIT"
                raise Offline(f"{repo.repo_id}@{revision} is not cached and the mirror is offline")
            self._raise_negative(key)
            try:
                snapshot = self._resolve(repo, revision)
            except NotFoundError as error:
                self._negative[key] = (time.monotonic() + NEGATIVE_TTL, error)
                raise
            except NetworkError:
                if saved is not None:
                    return _snapshot_from(repo, revision, saved), "STALE"
                raise
            self._save(key, _snapshot_record(snapshot))
            return snapshot, "MISS"

    def remember(self, repo: RepoRef, revision: str, snapshot: Snapshot) -> None:
        """Keep a snapshot learnt elsewhere (seeding from an HF cache)."""
        self._save(f"snap/{repo.repo_type}/{repo.repo_id}/{revision}", _snapshot_record(snapshot))

    # -- raw API answers ------------------------------------------------------------------

    def api(self, path_qs: str, revision: str | None, revalidate: bool = False) -> Answer:
        key = "api/" + path_qs
        with self._lock(key):
            saved = self._load(key)
            if saved is not None and self._fresh(revision, saved, revalidate):
                return _answer(saved, "HIT")
            if self.offline:
                if saved is not None:
                    return _answer(saved, "HIT")
                raise Offline(f"{path_qs} is not cached and the mirror is offline")
            try:
                status, body, headers = self._fetch_api(path_qs)
            except NetworkError:
                if saved is not None:
                    return _answer(saved, "STALE")
                raise
            if status >= 500 or status == 429:
                if saved is not None:
                    return _answer(saved, "STALE")
                return Answer(status, body, headers, "MISS")
            record = {"status": status, "body": body.decode("latin-1"), "headers": headers}
            if status == 200:
                self._save(key, record)
            else:
                record["expires"] = time.time() + NEGATIVE_TTL
                self._save(key, record)
            return Answer(status, body, headers, "MISS")

    # -- storage --------------------------------------------------------------------------

    def _fresh(self, revision: str | None, saved: dict[str, Any], revalidate: bool) -> bool:
        if "expires" in saved:
            return time.time() < saved["expires"] and not revalidate
        if revision is not None and COMMIT_RE.fullmatch(revision):
            return True  # a commit's answer never changes
        return not revalidate and time.time() - saved["saved_at"] < self.ttl

    def _raise_negative(self, key: str) -> None:
        hit = self._negative.get(key)
        if hit is not None:
            if time.monotonic() < hit[0]:
                raise hit[1]
            del self._negative[key]

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.directory / digest[:2] / f"{digest}.json"

    def _load(self, key: str) -> dict[str, Any] | None:
        record = self._memory.get(key)
        if record is not None:
            return record
        try:
            record = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not (isinstance(record, dict) and record.get("key") == key):
            return None
        self._memory[key] = record
        return record

    def _save(self, key: str, record: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        record = {**record, "key": key, "saved_at": time.time()}
        tmp.write_text(json.dumps(record), "utf-8")
        os.replace(tmp, path)
        self._memory[key] = record

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


def _snapshot_record(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "commit": snapshot.commit,
        "files": [[f.path, f.size, f.blob_id, f.sha256] for f in snapshot.files],
    }


def _snapshot_from(repo: RepoRef, revision: str, saved: dict[str, Any]) -> Snapshot:
    files = tuple(RemoteFile(p, s, b, h) for p, s, b, h in saved["files"])
    return Snapshot(repo=repo, revision=revision, commit=saved["commit"], files=files)


def _answer(saved: dict[str, Any], cache: str) -> Answer:
    return Answer(saved["status"], saved["body"].encode("latin-1"), saved["headers"], cache)


def revision_answer(snapshot: Snapshot) -> bytes:
    """The revision API's answer, made from a snapshot (when upstream cannot be asked)."""
    siblings: list[dict[str, Any]] = []
    for f in snapshot.files:
        item: dict[str, Any] = {"rfilename": f.path, "size": f.size, "blobId": f.blob_id}
        if f.sha256 is not None:
            item["lfs"] = {"size": f.size, "sha256": f.sha256}
        siblings.append(item)
    info = {"id": snapshot.repo.repo_id, "sha": snapshot.commit, "siblings": siblings}
    return json.dumps(info).encode()
