"""The mirror's metadata cache and synthesized answers, without a network."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from hfpull.errors import IntegrityError, NetworkError, NotFoundError, RepoNotFoundError
from hfpull.hashing import lfs_pointer
from hfpull.models import RemoteFile, RepoRef, Snapshot
from hfpull.serve import metadata
from hfpull.serve.answers import status_and_code
from hfpull.serve.metadata import MetadataCache, Offline, paths_info_answer

REPO = RepoRef("org/model")
COMMIT = "a" * 40


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _snapshot(files: dict[str, bytes], lfs: frozenset[str] = frozenset()) -> Snapshot:
    records = []
    for path, data in files.items():
        if path in lfs:
            sha = hashlib.sha256(data).hexdigest()
            records.append(RemoteFile(path, len(data), _blob_id(lfs_pointer(sha, len(data))), sha))
        else:
            records.append(RemoteFile(path, len(data), _blob_id(data)))
    return Snapshot(REPO, "main", COMMIT, tuple(records))


def _git_tree_ids(tmp_path: Path, files: dict[str, bytes], lfs: frozenset[str]) -> dict[str, str]:
    """Tree ids as git itself computes them (LFS files committed as their pointers)."""
    work = tmp_path / "git"
    work.mkdir()
    for path, data in files.items():
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if path in lfs:
            data = lfs_pointer(hashlib.sha256(data).hexdigest(), len(data))
        target.write_bytes(data)
    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null", "HOME": str(work)}

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    git("init", "-q")
    git("add", "-A")
    tree = git("write-tree").strip()
    ids = {"": tree}
    for line in git("ls-tree", "-r", "-t", tree).splitlines():
        meta, path = line.split("\t", 1)
        if meta.split()[1] == "tree":
            ids[path] = meta.split()[2]
    return ids


def test_paths_info_directories_carry_the_tree_ids_git_computes(tmp_path: Path) -> None:
    files = {
        "sub/a-b": b"git sorts a directory as if named 'a/': after 'a-b'",
        "sub/a/x.txt": b"x",
        "a/x.txt": b"x",
        "a/b/c.bin": b"\0" * 3000,
        "a.txt": b"dot",
        "nested/dir/notes file#1.txt": b"hello",
        "w.safetensors": b"weights" * 500,
    }
    lfs = frozenset({"a/b/c.bin", "w.safetensors"})
    expected = _git_tree_ids(tmp_path, files, lfs)
    directories = [d for d in expected if d]
    answer = json.loads(paths_info_answer(_snapshot(files, lfs), [*directories, "w.safetensors"]))
    trees = {item["path"]: item["oid"] for item in answer if item["type"] == "directory"}
    assert trees == {d: expected[d] for d in directories}
    weights = next(item for item in answer if item["path"] == "w.safetensors")
    pointer = lfs_pointer(hashlib.sha256(files["w.safetensors"]).hexdigest(), 3500)
    assert weights["lfs"] == {
        "oid": hashlib.sha256(files["w.safetensors"]).hexdigest(),
        "size": 3500,
        "pointerSize": len(pointer),
    }
    assert weights["oid"] == _blob_id(pointer)


def test_paths_info_leaves_out_what_the_snapshot_lacks() -> None:
    answer = json.loads(paths_info_answer(_snapshot({"a/x": b"1"}), ["missing", "a/x", "a/x/"]))
    assert [item["path"] for item in answer] == ["a/x"]


class _Upstream:
    def __init__(self) -> None:
        self.resolves: list[str] = []
        self.down = False

    def resolve(self, repo: RepoRef, revision: str) -> Snapshot:
        self.resolves.append(revision)
        if self.down:
            raise NetworkError("upstream is down")
        if revision == "gone":
            raise NotFoundError("no such revision")
        return Snapshot(repo, revision, COMMIT, _snapshot({"x": b"1"}).files)

    def api(self, path_qs: str, form: bytes | None) -> tuple[int, bytes, dict[str, str]]:
        if self.down:
            raise NetworkError("upstream is down")
        return 200, json.dumps({"path": path_qs}).encode(), {"Content-Type": "application/json"}


def _cache(tmp_path: Path, upstream: _Upstream, ttl: float = 600.0) -> MetadataCache:
    return MetadataCache(tmp_path / "meta", ttl, False, upstream.resolve, upstream.api)


def test_memory_is_bounded_and_evicted_records_are_read_back_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metadata, "MEMORY_RECORDS", 8)
    cache = _cache(tmp_path, _Upstream())
    for n in range(50):
        assert cache.api(f"/api/models/org/m{n}", COMMIT).cache == "MISS"
    assert len(cache._memory) == 8
    again = cache.api("/api/models/org/m0", COMMIT)  # evicted from memory, still on disk
    assert again.cache == "HIT" and json.loads(again.body) == {"path": "/api/models/org/m0"}
    assert len(cache._memory) == 8 and not cache._locks  # per-key locks are dropped


def test_a_branch_known_only_through_its_commit_still_answers_when_upstream_is_down(
    tmp_path: Path,
) -> None:
    upstream = _Upstream()
    cache = _cache(tmp_path, upstream)
    cache.snapshot(REPO, COMMIT)  # snapshot_download fetches by commit...
    cache.remember_commit(REPO, "main", COMMIT)  # ...after asking the branch's commit
    upstream.down = True
    snapshot, how = cache.snapshot(REPO, "main")
    assert (snapshot.revision, snapshot.commit, how) == ("main", COMMIT, "STALE")
    with pytest.raises(NetworkError):
        cache.snapshot(REPO, "other-branch")  # never seen: a clear failure, not a guess


def test_a_commit_answer_is_kept_and_a_branch_answer_revalidates_after_its_ttl(
    tmp_path: Path,
) -> None:
    upstream = _Upstream()
    cache = _cache(tmp_path, upstream, ttl=0.0)
    cache.snapshot(REPO, COMMIT)
    cache.snapshot(REPO, COMMIT)
    cache.snapshot(REPO, "main")
    cache.snapshot(REPO, "main")
    assert upstream.resolves == [COMMIT, "main", "main"]
    with pytest.raises(NotFoundError):
        cache.snapshot(REPO, "gone")
    with pytest.raises(NotFoundError):
        cache.snapshot(REPO, "gone")  # the not-found answer is remembered for a while
    assert upstream.resolves.count("gone") == 1


def test_the_hit_path_finds_fresh_snapshots_in_memory_only(tmp_path: Path) -> None:
    upstream = _Upstream()
    cache = _cache(tmp_path, upstream, ttl=600.0)
    assert cache.fresh_file(REPO, "main", "x") is None  # not known: the slow path asks
    cache.snapshot(REPO, "main")
    found = cache.fresh_file(REPO, "main", "x")
    assert found is not None and found[0].commit == COMMIT and found[1] is not None
    assert found[1].path == "x" and cache.fresh_file(REPO, "main", "nope") == (found[0], None)
    stale = _cache(tmp_path, upstream, ttl=0.0)  # branch answers expire at once
    stale.snapshot(REPO, COMMIT)
    stale.snapshot(REPO, "main")
    assert stale.fresh_file(REPO, COMMIT, "x") is not None  # a commit never expires
    assert stale.fresh_file(REPO, "main", "x") is None  # in memory, but due for revalidation


def test_one_mapping_from_errors_to_status_and_code() -> None:
    assert status_and_code(IntegrityError("bad bytes")) == (502, "UpstreamCorrupt")
    assert status_and_code(RepoNotFoundError("gone")) == (404, "RepoNotFound")
    assert status_and_code(Offline("no upstream")) == (504, "Offline")  # before NetworkError
    assert status_and_code(NetworkError("down")) == (502, "UpstreamUnavailable")
    assert status_and_code(KeyError("bug")) == (500, "InternalError")
