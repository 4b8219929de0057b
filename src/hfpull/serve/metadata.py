"""What upstream says about repos, cached: commits forever, branch names for a TTL.

Two kinds of answers are kept as records (serve/records.py: the store's ``meta/`` folder on
local disk, or ``meta/`` objects every replica shares):
- snapshots (commit + file list, validated by ``hub.client``) that resolve requests need;
- raw API answers (revision, tree pages) that clients read, with Xet fields stripped.
A name that is a 40-hex commit never changes, so its answer never expires. A branch or tag
answer is reused for ``ttl`` seconds, then revalidated; a client's ``Cache-Control:
no-cache`` forces that. When upstream fails (down, timeout, 429, 5xx) the last answer is
served and marked STALE. Not-found answers are kept for a short while.

A record's freshness is judged by the time saved in it, not by when this process read it:
with shared records, a replica whose memory copy expired re-reads the shared record first,
and asks upstream only if no replica refreshed it within the TTL, so all replicas agree on
what a branch names. When the object store is down, records are neither read nor written
(memory copies and upstream still answer).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from hfpull.blobstore.objects import StoreUnavailable
from hfpull.errors import EntryNotFoundError, HfpullError, NetworkError, NotFoundError
from hfpull.hashing import lfs_pointer
from hfpull.models import RemoteFile, RepoRef, Snapshot
from hfpull.names import COMMIT_RE
from hfpull.serve.records import LocalRecords, Records

NEGATIVE_TTL = 30.0
SNAPSHOT_HEAD = b'{"repo": ['  # how a snapshot record's file begins (see _snapshot_record)
MEMORY_RECORDS = 4096  # parsed answers kept in memory (the rest are re-read from disk)
PARSED_SNAPSHOTS = 256  # snapshots kept as objects with a path index, for the hit path


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
        directory: Path | Records,
        ttl: float,
        offline: bool,
        resolve: Callable[[RepoRef, str], Snapshot],
        fetch_api: Callable[[str, bytes | None], tuple[int, bytes, dict[str, str]]],
    ) -> None:
        self.records: Records = (
            LocalRecords(directory) if isinstance(directory, Path) else directory
        )
        self.ttl = ttl
        self.offline = offline
        self._resolve = resolve
        self._fetch_api = fetch_api
        self._negative: dict[str, tuple[float, HfpullError]] = {}
        # what is on disk, parsed once; bounded, so a crawler cannot grow the heap forever
        self._memory: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._locks: dict[str, list[Any]] = {}  # key -> [lock, users]; dropped when unused
        self._guard = threading.Lock()
        # parsed snapshots with a path index (hits are answered from them on the loop)
        self._parsed: OrderedDict[str, tuple[dict[str, Any], Snapshot, dict[str, RemoteFile]]]
        self._parsed = OrderedDict()

    # -- snapshots for resolve requests ---------------------------------------------------

    def snapshot(
        self, repo: RepoRef, revision: str, revalidate: bool = False
    ) -> tuple[Snapshot, str]:
        key = f"snap/{repo.repo_type}/{repo.repo_id}/{revision}"
        with self._lock(key):
            saved = self._load_fresh(key, revision, revalidate)
            if saved is not None and self._fresh(revision, saved, revalidate):
                return self._parsed_snapshot(key, repo, revision, saved)[0], "HIT"
            if self.offline:
                if saved is not None:
                    return self._parsed_snapshot(key, repo, revision, saved)[0], "HIT"
                known = self._known_commit(repo, revision)
                if known is None:
                    raise Offline(
                        f"{repo.repo_id}@{revision} is not cached and the mirror is offline"
                    )
            else:
                self._raise_negative(key)
                try:
                    snapshot = self._resolve(repo, revision)
                except NotFoundError as error:
                    self._remember_negative(key, error)
                    raise
                except NetworkError:
                    if saved is not None:
                        return self._parsed_snapshot(key, repo, revision, saved)[0], "STALE"
                    known = self._known_commit(repo, revision)
                    if known is None:
                        raise
                else:
                    self._save(key, _snapshot_record(snapshot))
                    return snapshot, "MISS"
        # upstream cannot be asked, but a client resolved this branch through us to a
        # commit whose files we know (snapshot_download asks by branch, fetches by commit)
        snapshot, _ = self.snapshot(repo, known)
        return dataclasses.replace(snapshot, revision=revision), "STALE"

    def fresh_file(
        self, repo: RepoRef, revision: str, path: str
    ) -> tuple[Snapshot, RemoteFile | None] | None:
        """A fresh snapshot already in memory and the file at ``path`` in it; None when the
        answer needs the disk or upstream. Never blocks: the hit path calls it on the loop."""
        key = f"snap/{repo.repo_type}/{repo.repo_id}/{revision}"
        with self._guard:
            record = self._memory.get(key)
        if record is None or not self._fresh(revision, record, False):
            return None
        snapshot, by_path = self._parsed_snapshot(key, repo, revision, record)
        return snapshot, by_path.get(path)

    def _parsed_snapshot(
        self, key: str, repo: RepoRef, revision: str, record: dict[str, Any]
    ) -> tuple[Snapshot, dict[str, RemoteFile]]:
        """The Snapshot of a record, with a path index, built once per record."""
        with self._guard:
            parsed = self._parsed.get(key)
        if parsed is None or parsed[0] is not record:
            snapshot = _snapshot_from(repo, revision, record)
            parsed = (record, snapshot, {f.path: f for f in snapshot.files})
            with self._guard:
                self._parsed[key] = parsed
                while len(self._parsed) > PARSED_SNAPSHOTS:
                    self._parsed.popitem(last=False)
        return parsed[1], parsed[2]

    def remember_commit(self, repo: RepoRef, revision: str, commit: str) -> None:
        """Note which commit a branch named when upstream last answered for it."""
        if revision != commit and COMMIT_RE.fullmatch(commit):
            self._save(f"ref/{repo.repo_type}/{repo.repo_id}/{revision}", {"commit": commit})

    def _known_commit(self, repo: RepoRef, revision: str) -> str | None:
        record = self._load(f"ref/{repo.repo_type}/{repo.repo_id}/{revision}")
        commit = record.get("commit") if record is not None else None
        if not isinstance(commit, str) or not COMMIT_RE.fullmatch(commit):
            return None
        if self._load(f"snap/{repo.repo_type}/{repo.repo_id}/{commit}") is None:
            return None
        return commit

    def remember(self, repo: RepoRef, revision: str, snapshot: Snapshot) -> None:
        """Keep a snapshot learnt elsewhere (seeding from an HF cache)."""
        self._save(f"snap/{repo.repo_type}/{repo.repo_id}/{revision}", _snapshot_record(snapshot))

    def peek(self, repo: RepoRef, revision: str) -> str | None:
        """The commit this revision names in the cache now, never asking upstream."""
        saved = self._load(f"snap/{repo.repo_type}/{repo.repo_id}/{revision}")
        commit = saved.get("commit") if saved is not None else None
        return commit if isinstance(commit, str) else None

    def refresh(self, repo: RepoRef, revision: str) -> tuple[str | None, Snapshot, str]:
        """Revalidate a revision now, as a client's ``no-cache`` would: its snapshot, and the
        raw API answers for it held in memory (revision, tree, paths-info: every one asked
        since the mirror started, up to MEMORY_RECORDS). Returns the commit before, the
        snapshot now and how it was answered (STALE: upstream could not be asked)."""
        before = self.peek(repo, revision)
        snapshot, cache = self.snapshot(repo, revision, revalidate=True)
        if cache == "STALE":
            return before, snapshot, cache
        self.remember_commit(repo, revision, snapshot.commit)
        for key in self._api_keys_for(repo, revision):
            path_qs, _, form = key.removeprefix("api/").partition("\n")
            try:
                self.api(path_qs, revision, True, form.encode("latin-1") if form else None)
            except HfpullError:
                pass  # it stays as it was; the snapshot, which resolve requests use, is new
        return before, snapshot, cache

    def _api_keys_for(self, repo: RepoRef, revision: str) -> list[str]:
        base = re.escape(f"api//api/{repo.api_plural}/{repo.repo_id}")
        names = "|".join(re.escape(n) for n in {revision, quote(revision, safe="")})
        verbs = f"(?:/(?:revision|tree|paths-info)/(?:{names})(?:[/?\n].*)?)"
        default = "(?:[?].*)?" if revision == "main" else "(?!)"  # the repo info answer
        pattern = re.compile(f"{base}(?:{verbs}|{default})", re.DOTALL)
        with self._guard:
            keys = list(self._memory)
        return [k for k in keys if pattern.fullmatch(k)]

    # -- raw API answers ------------------------------------------------------------------

    def api(
        self,
        path_qs: str,
        revision: str | None,
        revalidate: bool = False,
        form: bytes | None = None,
    ) -> Answer:
        """An API answer; ``form`` is a POST body (paths-info), part of the cache key."""
        key = "api/" + path_qs + ("" if form is None else "\n" + form.decode("latin-1"))
        with self._lock(key):
            saved = self._load_fresh(key, revision, revalidate)
            if saved is not None and self._fresh(revision, saved, revalidate):
                return _answer(saved, "HIT")
            if self.offline:
                if saved is not None:
                    return _answer(saved, "HIT")
                raise Offline(f"{path_qs} is not cached and the mirror is offline")
            try:
                status, body, headers = self._fetch_api(path_qs, form)
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

    def known_snapshots(self) -> Iterator[tuple[Snapshot, float]]:
        """Every snapshot record and when it was saved (for the status page). On disk only the
        head of each file is read to tell snapshots from API answers, which can be large."""
        for body in self.records.scan("snap", SNAPSHOT_HEAD):
            try:
                record = json.loads(body)
                repo_type, repo_id = record["repo"]
                prefix = f"snap/{repo_type}/{repo_id}/"
                if not str(record["key"]).startswith(prefix):
                    continue
                revision = record["key"][len(prefix) :]
                repo = RepoRef(str(repo_id), str(repo_type))
                yield _snapshot_from(repo, revision, record), float(record["saved_at"])
            except (ValueError, KeyError, TypeError):
                continue

    # -- storage --------------------------------------------------------------------------

    def _fresh(self, revision: str | None, saved: dict[str, Any], revalidate: bool) -> bool:
        if "expires" in saved:
            return time.time() < saved["expires"] and not revalidate
        if revision is not None and COMMIT_RE.fullmatch(revision):
            return True  # a commit's answer never changes
        return not revalidate and time.time() - saved["saved_at"] < self.ttl

    def _remember_negative(self, key: str, error: HfpullError) -> None:
        with self._guard:
            self._negative.pop(key, None)
            self._negative[key] = (time.monotonic() + NEGATIVE_TTL, error)
            while len(self._negative) > MEMORY_RECORDS:  # the oldest go first
                del self._negative[next(iter(self._negative))]

    def _raise_negative(self, key: str) -> None:
        with self._guard:
            hit = self._negative.get(key)
            if hit is not None and time.monotonic() >= hit[0]:
                del self._negative[key]
                hit = None
        if hit is not None:
            raise hit[1]

    def _load(self, key: str, reread: bool = False) -> dict[str, Any] | None:
        """The record from memory, else from the records; ``reread``: from the records even
        if memory has it (another replica may have saved a newer one)."""
        with self._guard:
            memory = self._memory.get(key)
            if memory is not None and not reread:
                self._memory.move_to_end(key)
                return memory
        try:
            body = self.records.load(key)
        except StoreUnavailable:
            return memory  # the store is down: what memory has is all there is
        try:
            record = json.loads(body) if body is not None else None
        except ValueError:
            record = None
        if not (isinstance(record, dict) and record.get("key") == key):
            return memory
        if memory is not None and memory.get("saved_at", 0) >= record.get("saved_at", 0):
            return memory  # ours is as new: keep the parsed copy (the hit path's index)
        self._remember(key, record)
        return record

    def _load_fresh(
        self, key: str, revision: str | None, revalidate: bool
    ) -> dict[str, Any] | None:
        """The record; with shared records, re-read if memory's copy is no longer fresh."""
        saved = self._load(key)
        if (
            saved is not None
            and self.records.shared
            and not revalidate
            and not self._fresh(revision, saved, False)
        ):
            saved = self._load(key, reread=True)
        return saved

    def _save(self, key: str, record: dict[str, Any]) -> None:
        record = {**record, "key": key, "saved_at": time.time()}
        try:
            self.records.save(key, json.dumps(record).encode())
        except StoreUnavailable as exc:  # kept in memory; other replicas ask upstream too
            print(f"hfpull serve: metadata not shared ({exc})", file=sys.stderr, flush=True)
        self._remember(key, record)

    def _remember(self, key: str, record: dict[str, Any]) -> None:
        with self._guard:
            self._memory[key] = record
            self._memory.move_to_end(key)
            while len(self._memory) > MEMORY_RECORDS:
                self._memory.popitem(last=False)

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        """One upstream question per key at a time (single flight for metadata)."""
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]


def _snapshot_record(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "repo": [snapshot.repo.repo_type, snapshot.repo.repo_id],  # first: SNAPSHOT_HEAD
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
            pointer = len(lfs_pointer(f.sha256, f.size))  # huggingface_hub requires it
            item["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": pointer}
        siblings.append(item)
    info = {"id": snapshot.repo.repo_id, "sha": snapshot.commit, "siblings": siblings}
    return json.dumps(info).encode()


def paths_info_answer(snapshot: Snapshot, paths: list[str]) -> bytes:
    """The paths-info API's answer for ``paths``, made from a snapshot: files and the
    directories they sit in (with git tree ids); paths the snapshot lacks are left out, as
    the Hub leaves them out."""
    files = {f.path: f for f in snapshot.files}
    trees = _tree_ids(snapshot)
    answer: list[dict[str, Any]] = []
    for path in dict.fromkeys(p.strip("/") for p in paths):
        file = files.get(path)
        if file is not None:
            answer.append(_file_entry(file))
        elif path in trees:
            answer.append({"type": "directory", "oid": trees[path], "size": 0, "path": path})
    return json.dumps(answer).encode()


def tree_answer(snapshot: Snapshot, path: str, query: str) -> bytes:
    """The tree API's answer for ``path`` (``""``: the root), made from a snapshot: its
    entries (``recursive=true``: everything below it), directories with git tree ids, in
    one page. For clients like ``snapshot_download`` when upstream cannot be asked."""
    recursive = any(k == "recursive" and v.lower() in ("1", "true") for k, v in parse_qsl(query))
    path = path.strip("/")
    trees = _tree_ids(snapshot)
    if path and path not in trees:
        raise EntryNotFoundError(f"{path!r} is not a folder of {snapshot.repo.repo_id}")
    prefix = f"{path}/" if path else ""

    def wanted(name: str) -> bool:
        return name.startswith(prefix) and (recursive or "/" not in name[len(prefix) :])

    entries = [
        {"type": "directory", "oid": oid, "size": 0, "path": directory}
        for directory, oid in trees.items()
        if directory and wanted(directory)
    ]
    entries += [_file_entry(f) for f in snapshot.files if wanted(f.path)]
    entries.sort(key=lambda e: str(e["path"]))
    return json.dumps(entries).encode()


def _file_entry(file: RemoteFile) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "file", "oid": file.blob_id, "size": file.size,
                            "path": file.path}  # fmt: skip
    if file.sha256 is not None:
        item["lfs"] = {
            "oid": file.sha256, "size": file.size,
            "pointerSize": len(lfs_pointer(file.sha256, file.size)),
        }  # fmt: skip
    return item


def _tree_ids(snapshot: Snapshot) -> dict[str, str]:
    """Git tree object ids of every directory of a snapshot ("" is the root)."""
    children: dict[str, dict[str, tuple[bool, str]]] = {"": {}}
    for f in snapshot.files:
        parts = f.path.split("/")
        for depth in range(1, len(parts)):
            children.setdefault("/".join(parts[:depth]), {})
    for f in snapshot.files:
        parent, _, name = f.path.rpartition("/")
        children[parent][name] = (False, f.blob_id)
    ids: dict[str, str] = {}
    for directory in sorted(children, key=lambda d: d.count("/") + (d != ""), reverse=True):
        entries = children[directory]
        # git orders entries by name, a directory's name compared as if it ended in "/"
        body = b"".join(
            (b"40000 " if is_tree else b"100644 ") + name.encode() + b"\0" + bytes.fromhex(oid)
            for name, (is_tree, oid) in sorted(
                entries.items(), key=lambda e: e[0].encode() + (b"/" if e[1][0] else b"")
            )
        )
        ids[directory] = hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()  # noqa: S324
        if directory:
            parent, _, name = directory.rpartition("/")
            children[parent][name] = (True, ids[directory])
    return ids
