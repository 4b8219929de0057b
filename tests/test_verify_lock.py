"""verify (cache, folder, archive; exit codes; --repair) and lock files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hfpull.errors import IntegrityError, NotFoundError
from hfpull.lock import create_lock, get_locked, read_lock, write_lock
from hfpull.pack import pack
from hfpull.pull import download
from hfpull.verify import repair, verify_target
from tests.conftest import RunCli, cli_env, fast_settings
from tests.fakehub import FakeHub
from tests.helpers import MiB, random_file, repo_dir


@pytest.fixture
def setup(fake_hub: FakeHub, tmp_path: Path) -> tuple[str, Path, dict[str, str]]:
    files = {
        "config.json": b'{"a": 1}',
        "w1.safetensors": random_file(tmp_path / "src", "w1", 2 * MiB),
        "w2.safetensors": random_file(tmp_path / "src", "w2", 1 * MiB),
        "sub/notes.txt": b"notes",
    }
    commit = fake_hub.add_repo("org/model", files)
    cache = tmp_path / "cache"
    download("org/model", settings=fast_settings(fake_hub.url, cache))
    env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url, HF_HUB_CACHE=str(cache))
    return commit, cache, env


def flip(path: Path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def snapshot(cache: Path, commit: str) -> Path:
    return repo_dir(cache, "org/model") / "snapshots" / commit


def test_intact_cache_exits_0_with_json(setup: tuple, run_cli: RunCli) -> None:
    commit, _cache, env = setup
    result = run_cli("verify", "org/model", "--json", env=env)
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert report["intact"] is True and report["checked"] == 4 and report["commit"] == commit


def test_damage_is_found_with_exit_4_and_repair_refetches_only_it(
    setup: tuple, fake_hub: FakeHub, run_cli: RunCli
) -> None:
    commit, cache, env = setup
    snap = snapshot(cache, commit)
    flip((snap / "w1.safetensors").resolve())  # a flipped byte in a blob
    (snap / "config.json").unlink()  # a missing file
    notes = snap / "sub" / "notes.txt"
    target = os.readlink(notes)
    notes.unlink()
    notes.symlink_to(os.readlink(snap / "w2.safetensors"))  # a link to the wrong blob
    assert target != os.readlink(notes)
    result = run_cli("verify", "org/model", "--json", env=env)
    assert result.returncode == 4
    kinds = {p["path"]: p["kind"] for p in json.loads(result.stdout)["problems"]}
    assert kinds == {
        "w1.safetensors": "mismatch",
        "config.json": "missing",
        "sub/notes.txt": "wrong-link",
    }
    fake_hub.reset_log()
    fixed = run_cli("verify", "org/model", "--repair", env=env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    # Only the corrupt blob is refetched (2 MiB); the missing and wrong links are rebuilt
    # from blobs that are intact, and w2 is not touched.
    file_bytes = fake_hub.bytes_sent("/resolve/") + fake_hub.bytes_sent("/cdn/")
    assert file_bytes == 2 * MiB
    assert run_cli("verify", "org/model", env=env).returncode == 0


def test_extra_files_fail_only_when_asked(setup: tuple, run_cli: RunCli) -> None:
    commit, cache, env = setup
    (snapshot(cache, commit) / "stray.bin").write_bytes(b"?")
    assert run_cli("verify", "org/model", env=env).returncode == 0
    strict = run_cli("verify", "org/model", "--fail-on-extra", env=env)
    assert strict.returncode == 4 and "extra: stray.bin" in strict.stdout


def test_could_not_check_is_not_exit_4(setup: tuple, run_cli: RunCli) -> None:
    _commit, _cache, env = setup
    down = {**env, "HF_ENDPOINT": "http://127.0.0.1:9", "HFPULL_MAX_RETRIES": "0"}
    strict = run_cli("verify", "org/model", "--against", "hub", env=down)
    assert strict.returncode == 3  # the Hub was required and could not be asked
    assert run_cli("verify", "org/other", env=env).returncode == 8  # not in the cache


def test_offline_default_uses_the_listing_saved_at_download_time(
    setup: tuple, fake_hub: FakeHub, run_cli: RunCli
) -> None:
    commit, cache, env = setup
    down = {**env, "HF_ENDPOINT": "http://127.0.0.1:9", "HFPULL_MAX_RETRIES": "0"}
    fallback = run_cli("verify", "org/model", env=down)
    assert fallback.returncode == 0 and "saved at download time" in fallback.stderr
    fake_hub.reset_log()
    offline = run_cli("verify", "org/model", env={**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and fake_hub.requests == []
    flip((snapshot(cache, commit) / "w2.safetensors").resolve())
    assert run_cli("verify", "org/model", env={**env, "HF_HUB_OFFLINE": "1"}).returncode == 4


def test_verify_an_archive_and_a_damaged_one(
    setup: tuple, fake_hub: FakeHub, tmp_path: Path, run_cli: RunCli
) -> None:
    _commit, cache, env = setup
    archive = tmp_path / "m.tar"
    pack("org/model", archive, settings=fast_settings(fake_hub.url, cache), offline=True)
    assert run_cli("verify", str(archive), env=env).returncode == 0
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 1  # inside w1's data
    archive.write_bytes(bytes(data))
    result = run_cli("verify", str(archive), env=env)
    assert result.returncode == 4 and "mismatch" in result.stdout


def test_verify_a_local_dir_download(
    fake_hub: FakeHub, setup: tuple, tmp_path: Path, run_cli: RunCli
) -> None:
    _commit, _cache, env = setup
    folder = tmp_path / "plain"
    download("org/model", settings=fast_settings(fake_hub.url, tmp_path / "c2", local_dir=folder))
    assert run_cli("verify", str(folder), env=env).returncode == 0
    flip(folder / "w2.safetensors")
    result = run_cli("verify", str(folder), env=env)
    assert result.returncode == 4 and "w2.safetensors" in result.stdout


def test_verify_a_cache_against_an_archive_manifest(
    setup: tuple, fake_hub: FakeHub, tmp_path: Path
) -> None:
    commit, cache, _env = setup
    archive = tmp_path / "m.tar.gz"
    pack("org/model", archive, compression="gzip", settings=fast_settings(fake_hub.url, cache))
    settings = fast_settings("http://127.0.0.1:9", cache)  # no network needed
    [report] = verify_target("org/model", manifest=archive, settings=settings)
    assert report.intact() and report.checked == 4 and report.commit == commit


def test_lock_pins_the_commit_after_main_moves(
    fake_hub: FakeHub, tmp_path: Path, run_cli: RunCli
) -> None:
    old = fake_hub.add_repo("org/model", {"config.json": b"v1", "w.safetensors": b"A" * 5000})
    env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url, HF_HUB_CACHE=str(tmp_path / "cache"))
    lock_file = tmp_path / "hfpull.lock"
    made = run_cli("lock", "org/model", "-o", str(lock_file), env=env)
    assert made.returncode == 0 and old in made.stdout
    fake_hub.add_repo(
        "org/model", {"config.json": b"v2", "w.safetensors": b"B" * 5000}
    )  # main moves
    got = run_cli("get", "--lock", str(lock_file), env=env)
    assert got.returncode == 0, got.stderr
    path = Path(got.stdout.strip())
    assert path.name == old and (path / "config.json").read_bytes() == b"v1"
    assert (repo_dir(tmp_path / "cache", "org/model") / "refs" / "main").read_text() == old
    assert run_cli("verify", "--lock", str(lock_file), env=env).returncode == 0
    flip((path / "w.safetensors").resolve(), 3)
    assert run_cli("verify", "--lock", str(lock_file), env=env).returncode == 4


def test_lock_refuses_to_drift(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo("org/model", {"config.json": b"v1", "w.safetensors": b"A" * 5000})
    settings = fast_settings(fake_hub.url, tmp_path / "cache")
    lock_file = tmp_path / "hfpull.lock"
    write_lock(lock_file, create_lock(["org/model@main"], include=["*.json"], settings=settings))
    [entry] = read_lock(lock_file)
    assert [f.path for f in entry.files] == ["config.json"] and entry.include == ("*.json",)
    document = json.loads(lock_file.read_text())
    document["repos"][0]["files"][0]["git_sha1"] = "0" * 40  # the Hub no longer matches
    lock_file.write_text(json.dumps(document))
    with pytest.raises(IntegrityError, match="differs from the lock"):
        get_locked(read_lock(lock_file)[0], settings)
    document["repos"][0]["commit"] = "1" * 40  # a commit the Hub does not have
    lock_file.write_text(json.dumps(document))
    with pytest.raises(NotFoundError, match="revision not found"):
        get_locked(read_lock(lock_file)[0], settings)


def test_repair_api_returns_an_intact_report(setup: tuple, fake_hub: FakeHub) -> None:
    commit, cache, _env = setup
    (snapshot(cache, commit) / "w2.safetensors").unlink()
    settings = fast_settings(fake_hub.url, cache)
    [report] = verify_target("org/model", settings=settings)
    assert not report.intact()
    assert repair(report, "model", settings).intact()


@pytest.mark.parametrize(
    "args",
    [
        ["verify"],
        ["verify", "org/model", "--against", "manifest"],
        ["verify", "org/model", "--against", "lock"],
        ["get"],
        ["get", "org/model", "--lock", "x.lock"],
        ["get", "org/model", "--cache-dir", "a", "--local-dir", "b"],
    ],
)
def test_usage_errors_exit_2(args: list[str], run_cli: RunCli) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("hfpull: error:") and "Traceback" not in result.stderr
