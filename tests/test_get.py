"""`hfpull.get` against the fake Hub: layout, resume, faults, verification, sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hfpull.errors import IntegrityError, NetworkError, UnsafeInputError, UsageError
from hfpull.events import ProgressEvent
from hfpull.pull import download, get
from tests.conftest import fast_settings
from tests.fakehub import FakeHub, Fault
from tests.helpers import MiB, leftovers, random_file, repo_dir, sha256_of

SEGMENT = 1 * MiB


@pytest.fixture
def big(tmp_path: Path) -> Path:
    return random_file(tmp_path / "src", "model.safetensors", 6 * MiB + 123)


@pytest.fixture
def repo(fake_hub: FakeHub, big: Path) -> str:
    return fake_hub.add_repo(
        "org/model",
        {
            "config.json": b'{"model_type": "test"}',
            "dir/sub file#1.txt": b"hello world",
            "model.safetensors": big,
            "tokenizer.json": b"{}" * 100,
        },
    )


def settings_for(hub: FakeHub, cache: Path, **kw: object):  # type: ignore[no-untyped-def]
    kw.setdefault("segment_size", SEGMENT)
    kw.setdefault("connections", 4)
    return fast_settings(hub.url, cache, **kw)


def test_get_writes_the_hf_cache_layout(
    fake_hub: FakeHub, repo: str, big: Path, cache: Path
) -> None:
    path = get("org/model", settings=settings_for(fake_hub, cache))
    root = repo_dir(cache, "org/model")
    assert path == root / "snapshots" / repo
    assert (root / "refs" / "main").read_text() == repo
    assert sha256_of(path / "model.safetensors") == sha256_of(big)
    assert (path / "dir" / "sub file#1.txt").read_bytes() == b"hello world"
    link = path / "model.safetensors"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert link.resolve().parent == root / "blobs"
    tree = json.loads((root / "trees" / f"{repo}.json").read_text())
    assert set(tree["files"]) == {
        "config.json",
        "dir/sub file#1.txt",
        "model.safetensors",
        "tokenizer.json",
    }
    assert leftovers(cache) == []


def test_second_get_downloads_nothing(fake_hub: FakeHub, repo: str, cache: Path) -> None:
    settings = settings_for(fake_hub, cache)
    download("org/model", settings=settings)
    fake_hub.reset_log()
    result = download("org/model", settings=settings)
    assert result.bytes_downloaded == 0
    assert {f.status for f in result.files} == {"present"}
    # One API request (the revision) and nothing else, as docs/usage.md promises.
    assert [r.path for r in fake_hub.requests] == ["/api/models/org/model/revision/main?blobs=true"]


def test_every_request_uses_the_pinned_commit(fake_hub: FakeHub, repo: str, cache: Path) -> None:
    download("org/model", settings=settings_for(fake_hub, cache))
    resolves = [r.path for r in fake_hub.requests if "/resolve/" in r.path]
    assert resolves and all(f"/resolve/{repo}/" in p for p in resolves)
    assert len([r for r in fake_hub.requests if "/revision/" in r.path]) == 1
    assert not [r for r in fake_hub.requests if r.method == "HEAD"]  # sizes come from the listing


def test_large_file_is_fetched_in_range_segments_reusing_the_cdn_url(
    fake_hub: FakeHub, repo: str, cache: Path
) -> None:
    download("org/model", settings=settings_for(fake_hub, cache))
    cdn = [r for r in fake_hub.requests if r.server == "cdn"]
    assert len(cdn) == 7  # 6 MiB + 123 bytes in 1 MiB segments
    assert all(r.status == 206 and "range" in r.headers for r in cdn)
    resolves = [r for r in fake_hub.requests if "model.safetensors" in r.path and r.server == "hub"]
    assert len(resolves) < len(cdn)  # the signed URL is reused, not re-resolved per segment


def test_include_exclude_and_filters_matching_nothing(
    fake_hub: FakeHub, repo: str, cache: Path
) -> None:
    result = download(
        "org/model",
        include=["*.json"],
        exclude=["tokenizer*"],
        settings=settings_for(fake_hub, cache),
    )
    chosen = {f.path for f in result.files if f.status != "skipped"}
    assert chosen == {"config.json"}
    with pytest.raises(UsageError, match="matches the filters"):
        download("org/model", include=["*.gguf"], settings=settings_for(fake_hub, cache))


def test_tree_api_lists_large_repos_completely(
    fake_hub: FakeHub, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {f"shard/{i:03d}.txt": f"file {i}".encode() for i in range(25)}
    fake_hub.add_repo("org/many", files)
    fake_hub.page_size = 4
    monkeypatch.setattr("hfpull.hub.client.SIBLINGS_TRUST_LIMIT", 10)  # force the paginated listing
    result = download("org/many", settings=settings_for(fake_hub, cache))
    assert len(result.files) == 25
    assert len([r for r in fake_hub.requests if "/tree/" in r.path]) == 7


def test_reset_mid_body_resumes_without_refetching(
    fake_hub: FakeHub, repo: str, big: Path, cache: Path
) -> None:
    fake_hub.faults.append(Fault("reset", server="cdn", after_bytes=300_000, times=3))
    path = get("org/model", settings=settings_for(fake_hub, cache))
    assert sha256_of(path / "model.safetensors") == sha256_of(big)
    assert fake_hub.bytes_sent("/cdn/") < big.stat().st_size * 1.1


@pytest.mark.parametrize(
    "fault",
    [
        Fault("short", server="cdn", after_bytes=1000, times=2),
        Fault("ignore_range", server="cdn", times=3),
        Fault("wrong_content_range", server="cdn", times=3),
        Fault("status", server="cdn", status=503, times=2),
        Fault("status", server="cdn", status=429, retry_after="1", times=1),
        Fault("html", server="cdn", times=2),
        Fault("stall", server="cdn", after_bytes=1000, seconds=4, times=1),
        Fault("trickle", server="cdn", seconds=0.4, times=1),
        Fault("status", match="/resolve/", status=502, times=2),
    ],
    ids=lambda f: f"{f.kind}-{f.status}" if f.kind == "status" else f.kind,
)
def test_faults_never_corrupt_and_recover(
    fake_hub: FakeHub, repo: str, big: Path, cache: Path, fault: Fault
) -> None:
    fake_hub.faults.append(fault)
    events: list[ProgressEvent] = []
    path = get("org/model", settings=settings_for(fake_hub, cache), progress=events.append)
    assert sha256_of(path / "model.safetensors") == sha256_of(big)
    assert any(e.kind == "retry" for e in events), "the fault was never hit"
    assert leftovers(cache) == []


def test_retry_after_is_honoured(fake_hub: FakeHub, repo: str, cache: Path) -> None:
    fake_hub.faults.append(Fault("status", server="cdn", status=429, retry_after="1", times=1))
    result = download("org/model", settings=settings_for(fake_hub, cache, connections=1))
    assert result.seconds >= 1.0  # the duration is the point: a lower bound only
    cdn = [r.status for r in fake_hub.requests if r.server == "cdn"]
    assert cdn[0] == 429 and set(cdn[1:]) == {206}


def test_expired_signed_url_is_resolved_again(
    fake_hub: FakeHub, repo: str, big: Path, cache: Path
) -> None:
    fake_hub.faults.append(Fault("expire", seconds=0, times=1))
    path = get("org/model", settings=settings_for(fake_hub, cache, connections=1))
    assert sha256_of(path / "model.safetensors") == sha256_of(big)
    assert [r.status for r in fake_hub.requests if r.server == "cdn"].count(403) >= 1
    assert fake_hub.bytes_sent("/cdn/") < big.stat().st_size * 1.1


def test_one_flipped_byte_is_refetched_once(
    fake_hub: FakeHub, repo: str, big: Path, cache: Path
) -> None:
    fake_hub.faults.append(Fault("flip", server="cdn", after_bytes=2 * MiB + 5, times=1))
    events: list[ProgressEvent] = []
    path = get("org/model", settings=settings_for(fake_hub, cache), progress=events.append)
    assert sha256_of(path / "model.safetensors") == sha256_of(big)
    assert any("mismatch" in e.message for e in events)


def test_persistent_corruption_fails_naming_file_and_hashes(
    fake_hub: FakeHub, repo: str, big: Path, cache: Path
) -> None:
    fake_hub.faults.append(Fault("flip", server="cdn", after_bytes=10))
    with pytest.raises(IntegrityError) as info:
        download("org/model", settings=settings_for(fake_hub, cache))
    message = str(info.value)
    assert "model.safetensors" in message and sha256_of(big) in message and "127.0.0.1" in message
    root = repo_dir(cache, "org/model")
    assert not (root / "blobs" / sha256_of(big)).exists()
    assert not list((root / "blobs").glob("*.incomplete"))  # corrupt bytes are not kept


def test_non_lfs_file_is_checked_with_git_sha1(fake_hub: FakeHub, repo: str, cache: Path) -> None:
    fake_hub.faults.append(Fault("flip", match="config.json", after_bytes=3))
    with pytest.raises(IntegrityError, match=r"config\.json: git-sha1 mismatch"):
        download("org/model", include=["config.json"], settings=settings_for(fake_hub, cache))


def test_dead_mirror_falls_back_to_origin(
    fake_hub: FakeHub, repo: str, big: Path, cache: Path
) -> None:
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    result = download("org/model", settings=settings_for(fake_hub, cache, mirrors=(dead,)))
    assert {f.source for f in result.files if f.status == "downloaded"} == {fake_hub.url[7:]}


def test_corrupt_mirror_is_dropped_and_origin_supplies_the_bytes(
    fake_hub: FakeHub, big: Path, cache: Path, tmp_path: Path
) -> None:
    later = random_file(tmp_path / "src", "z.bin", 300_000)
    # One file at a time, largest first: model.safetensors (corrupted by the mirror), then
    # z.safetensors and config.json, which are only asked for after the mismatch.
    files = {"config.json": b"{}", "model.safetensors": big, "z.safetensors": later}
    fake_hub.add_repo("org/model", files)
    with FakeHub() as mirror:
        mirror.add_repo("org/model", files)
        mirror.faults.append(Fault("flip", server="cdn", after_bytes=100))  # every time
        seen_at_mismatch: list[int] = []

        def on_event(event: ProgressEvent) -> None:
            if event.kind == "retry" and "mismatch" in event.message:
                seen_at_mismatch.append(len(mirror.requests))

        settings = settings_for(fake_hub, cache, mirrors=(mirror.url,), max_workers=1)
        result = download("org/model", settings=settings, progress=on_event)
        mirror_requests = mirror.requests
        assert mirror.bytes_sent("model.safetensors") == big.stat().st_size  # the bad copy
    assert sha256_of(Path(result.path) / "model.safetensors") == sha256_of(big)
    assert len(seen_at_mismatch) == 1
    # After the mismatch the mirror got no request at all: it was dropped for the run.
    assert len(mirror_requests) == seen_at_mismatch[0]
    assert not [r for r in mirror_requests if "z.safetensors" in r.path]
    assert not [r for r in mirror_requests if "config.json" in r.path]
    # The origin sent every byte of both LFS files, once, and is their reported source.
    assert fake_hub.bytes_sent("model.safetensors") == big.stat().st_size
    assert fake_hub.bytes_sent("z.safetensors") == later.stat().st_size
    sources = {f.path: f.source for f in result.files}
    assert sources == {
        "config.json": fake_hub.url.removeprefix("http://"),
        "model.safetensors": fake_hub.url.removeprefix("http://"),
        "z.safetensors": fake_hub.url.removeprefix("http://"),
    }


def test_every_source_unreachable_names_them(cache: Path) -> None:
    settings = fast_settings("http://127.0.0.1:9", cache, mirrors=("http://127.0.0.1:7",))
    with pytest.raises(NetworkError) as info:
        download("org/model", settings=settings)
    assert "127.0.0.1:9" in str(info.value) and "127.0.0.1:7" in str(info.value)


def test_local_dir_writes_files_and_hf_metadata(
    fake_hub: FakeHub, repo: str, big: Path, tmp_path: Path
) -> None:
    target = tmp_path / "out"
    settings = settings_for(fake_hub, tmp_path / "cache", local_dir=target)
    assert get("org/model", settings=settings) == target
    assert sha256_of(target / "model.safetensors") == sha256_of(big)
    assert not (target / "model.safetensors").is_symlink()
    meta = (
        (target / ".cache/huggingface/download/model.safetensors.metadata").read_text().split("\n")
    )
    assert meta[0] == repo and meta[1] == sha256_of(big) and float(meta[2]) > 0
    assert (target / ".cache/huggingface/.gitignore").read_text() == "*"
    fake_hub.reset_log()
    assert download("org/model", settings=settings).bytes_downloaded == 0
    assert leftovers(target) == []


def test_local_dir_adopts_matching_files_and_replaces_wrong_ones(
    fake_hub: FakeHub, repo: str, big: Path, tmp_path: Path
) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "model.safetensors").write_bytes(big.read_bytes())  # e.g. from another tool
    (target / "config.json").write_text('{"model_type": "WRONG!"}')
    result = download(
        "org/model", settings=settings_for(fake_hub, tmp_path / "c", local_dir=target)
    )
    status = {f.path: f.status for f in result.files}
    assert status["model.safetensors"] == "present" and status["config.json"] == "downloaded"
    assert (target / "config.json").read_bytes() == b'{"model_type": "test"}'


def test_local_dir_never_writes_through_a_planted_symlink(
    fake_hub: FakeHub, repo: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "out"
    target.mkdir()
    (target / "dir").symlink_to(outside)
    with pytest.raises(UnsafeInputError, match="symlink"):
        download("org/model", settings=settings_for(fake_hub, tmp_path / "c", local_dir=target))
    assert list(outside.iterdir()) == []
    assert not [r for r in fake_hub.requests if "/resolve/" in r.path]  # refused before fetching


def test_branch_moving_mid_run_cannot_mix_versions(
    fake_hub: FakeHub, big: Path, cache: Path
) -> None:
    first = fake_hub.add_repo("org/model", {"a.txt": b"v1", "model.safetensors": big})
    fake_hub.faults.append(Fault("delay", server="cdn", seconds=0.5, times=1))
    events: list[ProgressEvent] = []

    def move_branch(event: ProgressEvent) -> None:
        events.append(event)
        if event.kind == "start" and len(events) < 3:
            fake_hub.add_repo("org/model", {"a.txt": b"v2", "model.safetensors": b"new"})

    path = get("org/model", settings=settings_for(fake_hub, cache), progress=move_branch)
    assert path.name == first
    assert (path / "a.txt").read_bytes() == b"v1"


def test_dataset_repo_and_slash_revision(fake_hub: FakeHub, cache: Path) -> None:
    sha = fake_hub.add_repo("org/data", {"train.csv": b"a,b\n1,2\n"}, repo_type="dataset")
    fake_hub.add_branch("org/data", "refs/pr/1", sha, repo_type="dataset")
    path = get(
        "org/data",
        repo_type="dataset",
        revision="refs/pr/1",
        settings=settings_for(fake_hub, cache),
    )
    root = repo_dir(cache, "org/data", "dataset")
    assert root.name == "datasets--org--data" and path == root / "snapshots" / sha
    assert (root / "refs" / "refs" / "pr" / "1").read_text() == sha
    assert (path / "train.csv").read_bytes() == b"a,b\n1,2\n"
    assert any("/datasets/org/data/resolve/" in r.path for r in fake_hub.requests)


def test_commit_revision_writes_no_ref(fake_hub: FakeHub, repo: str, cache: Path) -> None:
    get("org/model", revision=repo, settings=settings_for(fake_hub, cache))
    assert not (repo_dir(cache, "org/model") / "refs").exists()


def test_private_repo_without_token_hints_at_the_token(fake_hub: FakeHub, cache: Path) -> None:
    from hfpull.errors import RepoNotFoundError

    fake_hub.add_repo("org/secret", {"a.txt": b"x"}, private=True)
    with pytest.raises(RepoNotFoundError) as info:
        download("org/secret", settings=settings_for(fake_hub, cache))
    assert "HF_TOKEN" in (info.value.hint or "")


def test_gated_repo_error_says_how_to_get_access(fake_hub: FakeHub, cache: Path) -> None:
    from hfpull.errors import GatedRepoError

    fake_hub.add_repo("org/gated", {"a.txt": b"x"}, gated=True)
    with pytest.raises(GatedRepoError) as info:
        download("org/gated", settings=settings_for(fake_hub, cache))
    assert f"{fake_hub.url}/org/gated" in (info.value.hint or "") and "HF_TOKEN" in (
        info.value.hint or ""
    )


def test_empty_files_and_serial_settings(fake_hub: FakeHub, big: Path, cache: Path) -> None:
    fake_hub.add_repo(
        "org/edge", {"empty.txt": b"", "model.safetensors": big, ".gitattributes": b"*"}
    )
    settings = settings_for(fake_hub, cache, max_workers=1, connections=1)
    path = get("org/edge", settings=settings)
    assert (path / "empty.txt").read_bytes() == b""
    assert sha256_of(path / "model.safetensors") == sha256_of(big)
    assert leftovers(cache) == []


def test_without_symlinks_snapshot_entries_are_copies(
    fake_hub: FakeHub, repo: str, big: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filesystems without symlinks (some Windows/FUSE setups): copy, as huggingface_hub does."""

    def no_symlinks(*_args: object, **_kwargs: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr("hfpull.cache.layout.os.symlink", no_symlinks)
    settings = settings_for(fake_hub, cache)
    path = get("org/model", settings=settings)
    entry = path / "model.safetensors"
    assert not entry.is_symlink() and sha256_of(entry) == sha256_of(big)
    fake_hub.reset_log()
    assert download("org/model", settings=settings).bytes_downloaded == 0  # seen as present


def test_hf_hub_offline_answers_from_the_cache_or_fails_without_network(
    fake_hub: FakeHub, repo: str, cache: Path
) -> None:
    import dataclasses

    from hfpull.errors import NotFoundError

    settings = settings_for(fake_hub, cache)
    download("org/model", include=["*.json"], settings=settings)
    offline = dataclasses.replace(settings, offline=True)
    fake_hub.reset_log()
    result = download("org/model", include=["*.json"], settings=offline)
    assert result.bytes_downloaded == 0
    assert {f.status for f in result.files} == {"present", "skipped"}
    with pytest.raises(NotFoundError, match="HF_HUB_OFFLINE"):
        download("org/model", settings=offline)  # the weights were never fetched
    assert fake_hub.requests == []
