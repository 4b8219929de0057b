"""fs: the one temp-file-and-rename writer."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hfpull.fs import atomic_write, replacing, unlink_quiet


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "ref"
    target.write_bytes(b"old")
    atomic_write(target, b"new", sync_dir=True)
    assert target.read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "archive.tar"
    target.write_bytes(b"complete")
    with pytest.raises(RuntimeError), replacing(target) as handle:
        handle.write(b"half")
        raise RuntimeError("stopped half-way")
    assert target.read_bytes() == b"complete"
    assert _leftovers(tmp_path) == []


def test_written_files_keep_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_a_folder_that_refuses_fsync_does_not_fail_a_finished_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_directory: Path) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr("hfpull.fs.fsync_dir", refuse)
    atomic_write(tmp_path / "f", b"x", sync_dir=True)
    assert (tmp_path / "f").read_bytes() == b"x"


def test_unlink_quiet_ignores_a_missing_file(tmp_path: Path) -> None:
    unlink_quiet(tmp_path / "never-there")


def test_disk_errors_names_the_step_and_keeps_the_cause() -> None:
    from hfpull.errors import DiskError, ExitCode
    from hfpull.fs import disk_errors

    cause = OSError(28, "No space left on device")
    with pytest.raises(DiskError) as caught, disk_errors("could not write x", hint="free some"):
        raise cause
    assert caught.value.message == "could not write x: No space left on device"
    assert caught.value.hint == "free some" and caught.value.exit_code is ExitCode.DISK
    assert caught.value.__cause__ is cause


def test_disk_errors_lets_other_errors_through() -> None:
    from hfpull.fs import disk_errors

    with pytest.raises(ValueError), disk_errors("could not write x"):
        raise ValueError("not a disk problem")


def test_start_writeback_is_a_harmless_hint(tmp_path: Path) -> None:
    import sys

    from hfpull import fs

    path = tmp_path / "blob"
    data = os.urandom(3 << 20)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.pwrite(fd, data, 0)
        fs.start_writeback(fd, 0, 2 << 20)
        fs.start_writeback(fd, 2 << 20, 2 << 20)  # empty range: nothing to do
        os.fsync(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    if sys.platform.startswith("linux"):
        assert fs._sync_file_range, "libc's sync_file_range was not found on Linux"
