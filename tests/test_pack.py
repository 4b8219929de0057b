"""pack / unpack: reproducible archives, streaming, reuse, and interop after restore."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from hfpull.archive.manifest import MANIFEST_NAME, parse_manifest
from hfpull.errors import IntegrityError, NotFoundError
from hfpull.pack import pack
from hfpull.unpack import unpack
from tests.conftest import ROOT, RunCli, cli_env, fast_settings
from tests.fakehub import FakeHub
from tests.helpers import MiB, leftovers, random_file, repo_dir, sha256_of
from tests.test_interop import model_files, run_python


@pytest.fixture
def files(tmp_path: Path) -> dict[str, bytes | Path]:
    return {
        **model_files(),
        "big.safetensors": random_file(tmp_path / "src", "big.bin", 3 * MiB),
        "copy.safetensors": random_file(
            tmp_path / "src", "big.bin", 3 * MiB
        ),  # same name: same data
        "ünï/名前 file.txt": b"unicode names survive",
    }


@pytest.fixture
def commit(fake_hub: FakeHub, files: dict[str, bytes | Path]) -> str:
    return fake_hub.add_repo("org/model", files)


def test_pack_is_reproducible_and_offline_pack_matches(
    fake_hub: FakeHub, commit: str, tmp_path: Path
) -> None:
    settings = fast_settings(fake_hub.url, tmp_path / "cache")
    for compression in ("none", "gzip", "zstd"):
        first = pack(
            "org/model", tmp_path / f"1.{compression}", compression=compression, settings=settings
        )
        again = pack(
            "org/model", tmp_path / f"2.{compression}", compression=compression, settings=settings,
            offline=True,
        )  # fmt: skip
        one, two = (
            (tmp_path / f"1.{compression}").read_bytes(),
            (tmp_path / f"2.{compression}").read_bytes(),
        )
        assert one == two and first.sha256 == again.sha256 == hashlib.sha256(one).hexdigest()
        assert first.size == len(one)


def test_archive_layout_manifest_first_regular_files_fixed_metadata(
    fake_hub: FakeHub, commit: str, tmp_path: Path
) -> None:
    archive = tmp_path / "a.tar"
    pack("org/model", archive, settings=fast_settings(fake_hub.url, tmp_path / "cache"))
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        manifest = parse_manifest(tar.extractfile(members[0]).read())  # type: ignore[union-attr]
    assert members[0].name == MANIFEST_NAME
    names = [m.name for m in members[1:]]
    assert names == sorted(names) and set(names) == {f.path for f in manifest.files}
    assert all(
        m.isreg() and m.mtime == 0 and m.uid == m.gid == 0 and m.mode == 0o644 for m in members
    )
    assert manifest.commit == commit and manifest.complete
    entry = {f.path: f for f in manifest.files}["config.json"]
    assert entry.sha256 == hashlib.sha256((tmp_path / "cache").joinpath(
        repo_dir(tmp_path / "cache", "org/model"), "snapshots", commit, "config.json").read_bytes()
    ).hexdigest()  # fmt: skip


def test_unpack_into_an_empty_cache_is_found_offline_by_huggingface_hub(
    fake_hub: FakeHub, commit: str, files: dict[str, bytes | Path], tmp_path: Path
) -> None:
    archive = tmp_path / "a.tar.zst"
    pack(
        "org/model",
        archive,
        compression="zstd",
        settings=fast_settings(fake_hub.url, tmp_path / "c1"),
    )
    fresh = tmp_path / "c2"
    with open(archive, "rb") as handle:
        result = unpack(handle, fast_settings(fake_hub.url, fresh))
    snapshot = Path(result.path)
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        assert (snapshot / name).read_bytes() == data
    env = cli_env(tmp_path, HF_HUB_CACHE=str(fresh), HF_HUB_OFFLINE="1", HF_ENDPOINT=fake_hub.url)
    found = run_python(
        "from huggingface_hub import snapshot_download; print(snapshot_download('org/model'))", env
    )
    assert found == result.path
    assert leftovers(fresh) == [] and not list(fresh.glob(".hfpull-staging-*"))


def test_unpack_reuses_blobs_already_in_the_cache(
    fake_hub: FakeHub, commit: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    settings = fast_settings(fake_hub.url, cache)
    archive = tmp_path / "a.tar"
    pack("org/model", archive, settings=settings)
    blobs = repo_dir(cache, "org/model") / "blobs"
    inodes = {p.name: p.stat().st_ino for p in blobs.iterdir()}
    with open(archive, "rb") as handle:
        unpack(handle, settings)
    assert {p.name: p.stat().st_ino for p in blobs.iterdir()} == inodes


def test_unpack_to_local_dir(fake_hub: FakeHub, commit: str, tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    pack(
        "org/model",
        archive,
        compression="gzip",
        settings=fast_settings(fake_hub.url, tmp_path / "c"),
    )
    target = tmp_path / "plain"
    with open(archive, "rb") as handle:
        result = unpack(handle, fast_settings(fake_hub.url, tmp_path / "c2", local_dir=target))
    assert result.path == str(target)
    assert (target / "config.json").is_file() and not (target / "config.json").is_symlink()
    meta = (target / ".cache/huggingface/download/config.json.metadata").read_text().split("\n")
    assert meta[0] == commit


def test_offline_pack_of_an_incomplete_cache_fails_clearly(
    fake_hub: FakeHub, commit: str, tmp_path: Path
) -> None:
    settings = fast_settings(fake_hub.url, tmp_path / "cache")
    pack("org/model", tmp_path / "part.tar", include=["*.json"], settings=settings)
    with pytest.raises(NotFoundError, match="not in the cache"):
        pack("org/model", tmp_path / "all.tar", offline=True, settings=settings)
    assert not (tmp_path / "all.tar").exists()


def test_pack_refuses_a_corrupted_cache_and_leaves_no_file(
    fake_hub: FakeHub, commit: str, tmp_path: Path
) -> None:
    settings = fast_settings(fake_hub.url, tmp_path / "cache")
    pack("org/model", tmp_path / "ok.tar", settings=settings)
    blob = (
        repo_dir(tmp_path / "cache", "org/model")
        / "blobs"
        / sha256_of(tmp_path / "src" / "big.bin")
    )
    data = bytearray(blob.read_bytes())
    data[1000] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"(big|copy)\.safetensors"):
        pack("org/model", tmp_path / "bad.tar", settings=settings, offline=True)
    assert not (tmp_path / "bad.tar").exists() and not list(tmp_path.glob(".bad.tar*"))


def test_filtered_pack_restores_without_claiming_a_complete_snapshot(
    fake_hub: FakeHub, commit: str, tmp_path: Path
) -> None:
    archive = tmp_path / "json.tar"
    pack(
        "org/model",
        archive,
        include=["*.json"],
        settings=fast_settings(fake_hub.url, tmp_path / "c"),
    )
    fresh = tmp_path / "c2"
    with open(archive, "rb") as handle:
        unpack(handle, fast_settings(fake_hub.url, fresh))
    assert not (repo_dir(fresh, "org/model") / "trees").exists()


def test_pack_to_stdout_piped_into_unpack_from_stdin(
    fake_hub: FakeHub, commit: str, tmp_path: Path, run_cli: RunCli
) -> None:
    env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url)
    packer = subprocess.Popen(
        [sys.executable, "-m", "hfpull", "pack", "org/model", "-o", "-", "--compression", "gzip",
         "--cache-dir", str(tmp_path / "c1")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    unpacker = subprocess.run(
        [sys.executable, "-m", "hfpull", "unpack", "-", "--cache-dir", str(tmp_path / "c2")],
        stdin=packer.stdout, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert packer.stdout is not None
    packer.stdout.close()
    pack_err = packer.communicate(timeout=60)[1].decode()
    assert packer.returncode == 0 and unpacker.returncode == 0, (pack_err, unpacker.stderr)
    assert "sha256" in pack_err and "bytes" in pack_err  # the summary goes to stderr with -o -
    assert unpacker.stdout.strip().endswith(commit)
    assert sha256_of(Path(unpacker.stdout.strip()) / "big.safetensors") == sha256_of(
        tmp_path / "src" / "big.bin"
    )


def test_pack_cli_prints_size_and_sha256(
    fake_hub: FakeHub, commit: str, tmp_path: Path, run_cli: RunCli
) -> None:
    env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url)
    out = tmp_path / "m.tar"
    result = run_cli(
        "pack", "org/model", "-o", str(out), "--cache-dir", str(tmp_path / "c"), env=env
    )
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in result.stdout and f"{out.stat().st_size} bytes" in result.stdout


def test_unpack_cli_rejects_garbage_with_exit_code(tmp_path: Path, run_cli: RunCli) -> None:
    junk = tmp_path / "junk.tar"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("evil")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    junk.write_bytes(buffer.getvalue())
    result = run_cli("unpack", str(junk), "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 6 and "not an hfpull archive" in result.stderr
    os.stat(tmp_path)  # nothing else to clean: the cache folder holds no repo
    assert not list((tmp_path / "c").glob("models--*"))


def test_offline_pack_without_a_tree_cache_is_identical(
    fake_hub: FakeHub, commit: str, tmp_path: Path
) -> None:
    """Older huggingface_hub wrote no trees/<commit>.json: the file list is rebuilt from the
    snapshot links (LFS pointer ids recomputed) and the archive must not change."""
    import shutil

    settings = fast_settings(fake_hub.url, tmp_path / "cache")
    pack("org/model", tmp_path / "with.tar", settings=settings)
    shutil.rmtree(repo_dir(tmp_path / "cache", "org/model") / "trees")
    pack("org/model", tmp_path / "without.tar", settings=settings, offline=True)
    assert (tmp_path / "with.tar").read_bytes() == (tmp_path / "without.tar").read_bytes()
