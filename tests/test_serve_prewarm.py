"""Filling the mirror: hfpull prewarm, hfpull serve import, hfpull serve refresh."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import requests

from hfpull.errors import EntryNotFoundError
from hfpull.models import RemoteFile, RepoRef, Snapshot
from hfpull.serve.metadata import revision_answer, tree_answer
from hfpull.serve.upstream import Upstream
from tests.conftest import cli_env, fast_settings
from tests.fakehub import FakeHub
from tests.helpers import MiB
from tests.test_interop import run_python


def repo_files() -> dict[str, bytes]:
    return {
        "config.json": b'{"model_type": "bert"}',
        "tokenizer.json": b'{"version": "1.0"}' * 50,
        "model.safetensors": os.urandom(3 * MiB + 17),  # LFS
        "nested/dir/notes file#1.txt": b"hello",
    }


def stored_blobs(store: Path) -> set[str]:
    blobs = store / "blobs"
    return {p.name for p in blobs.rglob("*") if p.is_file()} if blobs.exists() else set()


def etag(data: bytes, lfs: bool) -> str:
    if lfs:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def etags(files: dict[str, bytes]) -> set[str]:
    return {etag(data, name.endswith(".safetensors")) for name, data in files.items()}


def hf_download(tmp_path: Path, url: str, cache: str, call: str) -> str:
    env = cli_env(tmp_path, HF_ENDPOINT=url, HF_HUB_CACHE=str(tmp_path / cache),
                  HF_HUB_DISABLE_XET="1")  # fmt: skip
    return run_python(f"import huggingface_hub as h\nprint(h.{call})", env)


def assert_snapshot(folder: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (Path(folder) / name).read_bytes() == data, name


# -- answers made from a snapshot (upstream gone) ---------------------------------------------


@pytest.mark.parametrize("where", ["", "/nested", "/nested/dir"])
@pytest.mark.parametrize("recursive", [True, False])
def test_a_tree_answer_made_from_a_snapshot_is_the_hubs(
    fake_hub: FakeHub, where: str, recursive: bool
) -> None:
    files = {**repo_files(), "nested/b.txt": b"bee"}
    fake_hub.add_repo("org/model", files)
    query = "recursive=True&expand=False" if recursive else ""
    hub = requests.get(f"{fake_hub.url}/api/models/org/model/tree/main{where}?{query}", timeout=10)
    snapshot = Upstream(fast_settings(fake_hub.url, Path("unused"))).resolve(
        RepoRef("org/model"), "main"
    )
    ours = json.loads(tree_answer(snapshot, where.lstrip("/"), query))
    theirs = hub.json()
    # directory ids are git's own (checked against git in test_serve_units); the fake Hub's
    # are not, and it leaves out the size 0 the Hub sends for directories
    for entry in [*ours, *theirs]:
        if entry["type"] == "directory":
            entry.pop("oid")
            assert entry.pop("size", 0) == 0
    assert ours == theirs


def test_a_tree_answer_for_a_missing_folder_is_not_found() -> None:
    snapshot = Snapshot(RepoRef("org/model"), "main", "a" * 40, (RemoteFile("x", 1, "b" * 40),))
    with pytest.raises(EntryNotFoundError):
        tree_answer(snapshot, "nowhere", "")


def test_a_revision_answer_made_from_a_snapshot_is_read_by_huggingface_hub(
    fake_hub: FakeHub,
) -> None:
    from huggingface_hub.hf_api import ModelInfo

    files = repo_files()
    fake_hub.add_repo("org/model", files)
    snapshot = Upstream(fast_settings(fake_hub.url, Path("unused"))).resolve(
        RepoRef("org/model"), "main"
    )
    info = ModelInfo(**json.loads(revision_answer(snapshot)))
    answer = requests.get(f"{fake_hub.url}/api/models/org/model?blobs=True", timeout=10)
    hub = ModelInfo(**answer.json())
    assert info.sha == hub.sha
    assert sorted(info.siblings or [], key=str) == sorted(hub.siblings or [], key=str)
