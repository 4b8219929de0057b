"""Hostile or broken Hub answers are refused at the boundary, before anything is written."""

from __future__ import annotations

import pytest
import responses

from hfpull.errors import UnsafeInputError
from hfpull.hub.client import HubClient, _files_from_siblings, _files_from_tree
from hfpull.hub.http import new_session
from hfpull.hub.sources import RetryPolicy, SourcePool
from hfpull.models import RepoRef
from hfpull.settings import Settings

SHA1 = "a" * 40
SHA256 = "b" * 64


def entry(path: str = "f.bin", size: object = 10, oid: object = SHA1, lfs: object = None) -> dict:
    item: dict = {"type": "file", "path": path, "size": size, "oid": oid}
    if lfs is not None:
        item["lfs"] = lfs
    return item


@pytest.mark.parametrize(
    "bad",
    [
        entry(size=-1),
        entry(size=1.5),
        entry(size=True),
        entry(size="10"),
        entry(size=2**60),
        entry(oid="../../x"),
        entry(oid=SHA1.upper()),
        entry(lfs={"oid": "not-a-hash", "size": 10}),
        entry(lfs={"oid": SHA256, "size": 11}),  # two different sizes
        entry(lfs="yes"),
        entry(path="../escape"),
        "not an object",
    ],
)
def test_malformed_tree_entries_are_refused(bad: object) -> None:
    with pytest.raises(UnsafeInputError):
        _files_from_tree([bad])


def test_duplicate_paths_and_file_folder_conflicts_are_refused() -> None:
    with pytest.raises(UnsafeInputError, match="twice"):
        _files_from_tree([entry("a"), entry("a")])
    with pytest.raises(UnsafeInputError, match="a file and a folder"):
        _files_from_tree([entry("a"), entry("a/b")])


def test_valid_entries_parse_and_folders_are_skipped() -> None:
    files = _files_from_tree(
        [
            {"type": "directory", "path": "d", "oid": SHA1},
            entry("d/w.bin", 10, SHA1, {"oid": SHA256, "size": 10, "pointerSize": 130}),
        ]
    )
    assert [(f.path, f.sha256, f.etag) for f in files] == [("d/w.bin", SHA256, SHA256)]


def test_siblings_without_metadata_mean_use_the_tree_api() -> None:
    assert _files_from_siblings([{"rfilename": "a"}]) is None
    assert _files_from_siblings(None) is None


def client(url: str) -> HubClient:
    settings = Settings(endpoint=url, max_retries=0, backoff_base=0.0)
    return HubClient(settings, SourcePool.from_settings(settings), RetryPolicy(), new_session)


@responses.activate
def test_invalid_commit_id_is_refused() -> None:
    url = "https://hub.example"
    responses.get(
        f"{url}/api/models/o/m/revision/main?blobs=true", json={"id": "o/m", "sha": "../x"}
    )
    with pytest.raises(UnsafeInputError, match="invalid commit id"):
        client(url).resolve(RepoRef("o/m"), "main")


@responses.activate
def test_oversized_or_invalid_json_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://hub.example"
    monkeypatch.setattr("hfpull.hub.client.MAX_JSON_BYTES", 1000)
    responses.get(f"{url}/api/models/o/m/revision/main?blobs=true", body=b"[" * 5000)
    with pytest.raises(UnsafeInputError, match="oversized"):
        client(url).resolve(RepoRef("o/m"), "main")
    responses.replace(
        responses.GET, f"{url}/api/models/o/m/revision/main?blobs=true", body=b"[" * 900
    )
    with pytest.raises(UnsafeInputError, match="invalid JSON"):
        client(url).resolve(RepoRef("o/m"), "main")


@responses.activate
def test_looping_pagination_is_stopped() -> None:
    url = "https://hub.example"
    tree = f"{url}/api/models/o/m/tree/{SHA1}?recursive=true&expand=false"
    responses.get(tree, json=[entry("a")], headers={"Link": f'<{tree}>; rel="next"'})
    with pytest.raises(UnsafeInputError, match="loops"):
        client(url).list_tree(RepoRef("o/m"), SHA1)


@responses.activate
def test_foreign_next_link_is_rebased_onto_the_source() -> None:
    """A mirror relaying the Hub's absolute Link must not send the client to the Hub."""
    url = "https://mirror.example"
    first = f"{url}/api/models/o/m/tree/{SHA1}?recursive=true&expand=false"
    foreign = (
        f"https://huggingface.co/api/models/o/m/tree/{SHA1}?recursive=true&expand=false&cursor=2"
    )
    responses.get(first, json=[entry("a")], headers={"Link": f'<{foreign}>; rel="next"'})
    responses.get(f"{first}&cursor=2", json=[entry("b")])
    files = client(url).list_tree(RepoRef("o/m"), SHA1)
    assert [f.path for f in files] == ["a", "b"]
    assert all(c.request.url.startswith(url) for c in responses.calls)
