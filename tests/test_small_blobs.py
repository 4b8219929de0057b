"""Small blobs skip the claim (engine/small.py): a private temp file, renamed once verified."""

from __future__ import annotations

import os
import time
from pathlib import Path

from hfpull.engine.small import STALE_SECONDS, SmallPartial, is_small, remove_stale
from hfpull.models import RemoteFile
from tests.helpers import leftovers

MiB = 1 << 20


def remote(size: int, etag: str = "ab" * 20) -> RemoteFile:
    return RemoteFile(path="a.txt", size=size, blob_id=etag)


def test_the_limit_is_inclusive_and_zero_turns_it_off() -> None:
    assert is_small(remote(MiB), MiB)
    assert is_small(remote(0), MiB)
    assert not is_small(remote(MiB + 1), MiB)
    assert not is_small(remote(10), 0)


def test_two_writers_of_one_blob_get_files_of_their_own(tmp_path: Path) -> None:
    one, two = SmallPartial(tmp_path, remote(5)), SmallPartial(tmp_path, remote(5))
    assert one.data_path != two.data_path
    one.write(0, b"hello")
    one.mark_done(0, 5)
    two.write(0, b"HELLO")
    assert one.snapshot_done().prefix_end() == 5 and two.snapshot_done().total() == 0
    assert one.data_path.read_bytes() == b"hello"
    one.discard(), two.discard()
    assert list(tmp_path.iterdir()) == []


def test_publish_hands_over_the_file_and_release_after_it_removes_nothing(tmp_path: Path) -> None:
    partial = SmallPartial(tmp_path, remote(3))
    partial.write(0, b"abc")
    final = tmp_path / "final"
    partial.publish(lambda verified: os.replace(verified, final))
    assert partial.fd == -1
    partial.release()  # the scheduler's cleanup path after any exception
    assert final.read_bytes() == b"abc"
    assert list(tmp_path.iterdir()) == [final]


def test_reset_forgets_every_byte(tmp_path: Path) -> None:
    partial = SmallPartial(tmp_path, remote(3))
    partial.write(0, b"abc")
    partial.mark_done(0, 3)
    partial.reset()
    assert partial.snapshot_done().total() == 0 and partial.data_path.stat().st_size == 0
    partial.discard()


def test_temp_files_of_killed_runs_go_after_an_hour_live_ones_stay(tmp_path: Path) -> None:
    live = SmallPartial(tmp_path, remote(3))
    dead = SmallPartial(tmp_path, remote(3, "cd" * 20))
    other = tmp_path / ("ef" * 20 + ".hfpull-0123.incomplete")  # a claimed partial: not ours
    other.write_bytes(b"x")
    old = time.time() - STALE_SECONDS - 60
    os.utime(dead.data_path, (old, old))
    os.utime(other, (old, old))
    dead.close()
    remove_stale(tmp_path)
    assert live.data_path.exists() and other.exists()
    assert not dead.data_path.exists()
    live.discard()
    other.unlink()
    assert leftovers(tmp_path) == []
