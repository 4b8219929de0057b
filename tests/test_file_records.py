"""One rule for a file record's size and hashes, in every reader: the Hub's listings, the
saved tree listing, lock files and archive manifests (each keeps its own error wording)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hfpull.archive.manifest import parse_manifest
from hfpull.cache.offline import read_tree_listing
from hfpull.errors import UnsafeInputError
from hfpull.hub.client import _files_from_tree
from hfpull.lock import read_lock
from hfpull.names import MAX_FILE_SIZE, file_record_problem, is_size

SHA1 = "a" * 40
SHA256 = "b" * 64
BAD_SIZES = [-1, 1.5, True, "10", None, MAX_FILE_SIZE]
GOOD_SIZES = [0, 10, MAX_FILE_SIZE - 1]


@pytest.mark.parametrize("size", GOOD_SIZES)
def test_good_sizes(size: int) -> None:
    assert is_size(size) and file_record_problem(size, SHA1, None) is None


@pytest.mark.parametrize("size", BAD_SIZES)
def test_bad_sizes(size: object) -> None:
    assert not is_size(size) and file_record_problem(size, SHA1, None) == "size"


@pytest.mark.parametrize(
    ("blob_id", "sha256", "problem"),
    [
        (SHA1.upper(), None, "git sha1"),
        (40, None, "git sha1"),
        (SHA1, "not-a-hash", "sha256"),
        (SHA1, 64, "sha256"),
        (SHA1, SHA256, None),
    ],
)
def test_hash_rules(blob_id: object, sha256: object, problem: str | None) -> None:
    assert file_record_problem(10, blob_id, sha256) == problem


def _tree(size: object, blob_id: object = SHA1, sha256: object = None) -> list:
    lfs = None if sha256 is None else {"oid": sha256, "size": size}
    return [{"type": "file", "path": "f", "size": size, "oid": blob_id, "lfs": lfs}]


def _listing(tmp_path: Path, size: object, blob_id: object = SHA1, sha256: object = None) -> Path:
    info: dict = {"size": size, "blob_id": blob_id}
    if sha256 is not None:
        info.update(lfs_sha256=sha256, lfs_size=size)
    path = tmp_path / "trees.json"
    path.write_text(json.dumps({"format_version": 1, "files": {"f": info}}))
    return path


def _lock(tmp_path: Path, size: object, blob_id: object = SHA1, sha256: object = None) -> Path:
    entry: dict = {"path": "f", "size": size, "git_sha1": blob_id}
    if sha256 is not None:
        entry["sha256"] = sha256
    repo = {
        "repo_id": "org/m", "repo_type": "model", "revision": "main", "commit": "c" * 40,
        "include": [], "exclude": [], "files": [entry],
    }  # fmt: skip
    path = tmp_path / "hfpull.lock"
    path.write_text(json.dumps({"hfpull_lock_version": 1, "repos": [repo]}))
    return path


def _manifest(size: object, git_sha1: object = SHA1, sha256: object = SHA256) -> bytes:
    return json.dumps({
        "format": "hfpull-archive", "format_version": 1, "tool": "t", "repo_id": "org/m",
        "repo_type": "model", "revision": "main", "commit": "c" * 40, "complete": True,
        "files": [{"path": "f", "size": size, "sha256": sha256, "git_sha1": git_sha1,
                   "lfs": False}],
    }).encode()  # fmt: skip


@pytest.mark.parametrize("size", BAD_SIZES)
def test_every_reader_refuses_the_same_sizes(tmp_path: Path, size: object) -> None:
    with pytest.raises(UnsafeInputError, match="invalid size"):
        _files_from_tree(_tree(size))
    assert read_tree_listing(_listing(tmp_path, size)) is None
    with pytest.raises(UnsafeInputError, match=r"malformed \(bad size for 'f'\)"):
        read_lock(_lock(tmp_path, size))
    with pytest.raises(UnsafeInputError, match="invalid size in manifest"):
        parse_manifest(_manifest(size))


@pytest.mark.parametrize("size", GOOD_SIZES)
def test_every_reader_accepts_the_same_sizes(tmp_path: Path, size: int) -> None:
    assert _files_from_tree(_tree(size))[0].size == size
    listing = read_tree_listing(_listing(tmp_path, size, sha256=SHA256))
    assert listing is not None and listing[0].size == size
    assert read_lock(_lock(tmp_path, size, sha256=SHA256))[0].files[0].size == size
    assert parse_manifest(_manifest(size)).files[0].size == size


@pytest.mark.parametrize(("blob_id", "sha256"), [(40, None), (SHA1, 64), (SHA1.upper(), None)])
def test_every_reader_refuses_the_same_hashes(
    tmp_path: Path, blob_id: object, sha256: object
) -> None:
    with pytest.raises(UnsafeInputError):
        _files_from_tree(_tree(10, blob_id, sha256))
    assert read_tree_listing(_listing(tmp_path, 10, blob_id, sha256)) is None
    with pytest.raises(UnsafeInputError, match=r"malformed \(bad hash for 'f'\)"):
        read_lock(_lock(tmp_path, 10, blob_id, sha256))
    with pytest.raises(UnsafeInputError, match=r"invalid (git sha1|sha256) in manifest"):
        parse_manifest(_manifest(10, blob_id, sha256 if sha256 is not None else SHA256))


def test_a_trailing_newline_never_passes_for_an_id_or_hash() -> None:
    from hfpull.errors import UsageError
    from hfpull.names import check_commit, check_sha256, validate_repo_id

    with pytest.raises(UnsafeInputError):
        check_commit("a" * 40 + "\n", "test")
    with pytest.raises(UnsafeInputError):
        check_sha256("b" * 64 + "\n", "test")
    with pytest.raises(UsageError):
        validate_repo_id("org/model\n")
    assert check_commit("a" * 40, "test") == "a" * 40
