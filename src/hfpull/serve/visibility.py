"""Whether a repo is gated or private, as upstream last said, kept beside the metadata.

The repo info answer (``GET /api/{type}s/{repo}``, asked with the mirror's own token) has
``"gated": false|"auto"|"manual"`` and ``"private": bool``, and the id upstream knows the
repo by (a renamed repo answers under its new id). The record is kept in memory and as a
record (serve/records.py: ``meta/visibility/`` on local disk or on the shared object store),
so it holds for cache hits with upstream down and after a restart, and replicas on one
object store ask upstream once per repo and TTL between them.
It is refreshed after the metadata TTL; when upstream cannot be asked the last record
stays. A repo upstream does not show the mirror is recorded as not found and treated as
private: bytes cached while it was public are not handed out after it went private.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hfpull.blobstore.objects import StoreUnavailable
from hfpull.errors import HfpullError
from hfpull.models import RepoRef
from hfpull.serve.records import LocalRecords, Records

NOT_FOUND_TTL = 30.0
MEMORY_RECORDS = 4096
LOCK_STRIPES = 64

FetchInfo = Callable[[str], tuple[int, bytes, dict[str, str]]]


@dataclass(frozen=True)
class Visibility:
    repo_id: str  # the id upstream answered for (a renamed repo's new id)
    gated: bool
    private: bool
    found: bool = True  # False: upstream does not show this repo to the mirror
    saved_at: float = 0.0

    @property
    def restricted(self) -> bool:
        """Everything about it (info, files) needs proven access."""
        return self.private or not self.found


class VisibilityCache:
    def __init__(
        self, directory: Path | Records, ttl: float, offline: bool, fetch_info: FetchInfo
    ) -> None:
        # on local disk the layout of earlier releases (flat, keyed by "type/repo"); shared
        # records carry a "visibility/" kind so they sit apart from the metadata's
        self.records: Records = (
            LocalRecords(directory, flat=True) if isinstance(directory, Path) else directory
        )
        self._kind = "visibility/" if self.records.shared else ""
        self.ttl = ttl
        self.offline = offline
        self._fetch_info = fetch_info
        self._memory: OrderedDict[str, Visibility] = OrderedDict()
        self._guard = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(LOCK_STRIPES)]

    def fresh(self, repo: RepoRef) -> Visibility | None:
        """A record still within its TTL, from memory (never blocks: called on the loop)."""
        with self._guard:
            record = self._memory.get(_key(repo))
        return record if record is not None and self._is_fresh(record) else None

    def lookup(self, repo: RepoRef) -> Visibility | None:
        """The record, asking upstream when it is missing or old (blocking). None: never
        known and upstream cannot be asked now (``--offline``, seeded stores, outages)."""
        key = _key(repo)
        with self._stripes[hash(key) % LOCK_STRIPES]:  # one upstream question per repo
            record = self._load(key)
            if record is not None and not self._is_fresh(record) and self.records.shared:
                record = self._load(key, reread=True)  # another replica may have asked
            if self.offline or (record is not None and self._is_fresh(record)):
                return record
            asked = self._ask(repo)
            if asked is None:
                return record  # upstream cannot tell now: the last word stands
            self._save(key, asked)
            return asked

    def _ask(self, repo: RepoRef) -> Visibility | None:
        try:
            status, body, headers = self._fetch_info(f"/api/{repo.api_plural}/{repo.repo_id}")
        except HfpullError:
            return None
        now = time.time()
        if status == 404 or (status == 401 and headers.get("X-Error-Code") == "RepoNotFound"):
            return Visibility(repo.repo_id, False, True, found=False, saved_at=now)
        if status != 200:
            return None
        try:
            info = json.loads(body)
        except ValueError:
            return None
        if not isinstance(info, dict) or not isinstance(info.get("id"), str):
            return None
        gated, private = info.get("gated", False), info.get("private", False)
        # anything but an explicit false (e.g. "auto", "manual", or a new kind) is gated
        return Visibility(info["id"], gated is not False, private is not False, saved_at=now)

    def _is_fresh(self, record: Visibility) -> bool:
        ttl = self.ttl if record.found else min(self.ttl, NOT_FOUND_TTL)
        return time.time() - record.saved_at < ttl

    def _load(self, key: str, reread: bool = False) -> Visibility | None:
        with self._guard:
            memory = self._memory.get(key)
        if memory is not None and not reread:
            return memory
        try:
            body = self.records.load(self._kind + key)
        except StoreUnavailable:
            return memory
        try:
            saved: dict[str, Any] = json.loads(body) if body is not None else {}
            if saved.pop("key") != key:
                return memory
            record = Visibility(**saved)
        except (ValueError, TypeError, KeyError, AttributeError):
            return memory
        if memory is not None and memory.saved_at >= record.saved_at:
            return memory
        self._remember(key, record)
        return record

    def _save(self, key: str, record: Visibility) -> None:
        try:
            self.records.save(self._kind + key, json.dumps({"key": key, **asdict(record)}).encode())
        except StoreUnavailable:
            pass  # kept in memory; upstream is asked again after a restart
        self._remember(key, record)

    def _remember(self, key: str, record: Visibility) -> None:
        with self._guard:
            self._memory[key] = record
            self._memory.move_to_end(key)
            while len(self._memory) > MEMORY_RECORDS:
                self._memory.popitem(last=False)


def _key(repo: RepoRef) -> str:
    return f"{repo.repo_type}/{repo.repo_id}"
