"""The claim protocol: never two writers in one partial, with no file lock involved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from hfpull.models import RemoteFile
from hfpull.partial import BUSY, Partial, claim, held_bytes, journal_path_for

FILE = RemoteFile("w.bin", 1000, "a" * 40, "b" * 64)


def _abandoned(
    directory: Path, *, host: str, pid: int, done: list[list[int]], age: float = 0
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f"{FILE.etag}.hfpull-old.incomplete"
    data.write_bytes(b"x" * 600)
    journal = journal_path_for(data)
    journal.write_text(json.dumps({
        "format": 1, "etag": FILE.etag, "size": FILE.size, "done": done,
        "host": host, "pid": pid, "token": "hfpull-old", "updated": time.time() - age,
    }))  # fmt: skip
    if age:
        os.utime(journal, (time.time() - age, time.time() - age))
    return data


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_partial_of_a_dead_process_is_adopted_with_its_ranges(tmp_path: Path) -> None:
    import socket

    _abandoned(tmp_path, host=socket.gethostname(), pid=_dead_pid(), done=[[0, 600]])
    partial = claim(tmp_path, FILE)
    assert isinstance(partial, Partial)
    assert partial.done.ranges == [(0, 600)]
    assert [p.name for p in tmp_path.glob("*.incomplete")] == [partial.data_path.name]
    partial.release()
    assert held_bytes(tmp_path, FILE) == 600


def test_partial_of_a_live_local_process_is_left_alone(tmp_path: Path) -> None:
    import socket

    _abandoned(tmp_path, host=socket.gethostname(), pid=os.getppid(), done=[[0, 600]])
    assert claim(tmp_path, FILE) is BUSY


def test_other_host_partial_is_busy_while_fresh_and_adopted_when_stale(tmp_path: Path) -> None:
    _abandoned(tmp_path / "fresh", host="other-node", pid=1, done=[[0, 600]])
    assert claim(tmp_path / "fresh", FILE) is BUSY
    _abandoned(tmp_path / "stale", host="other-node", pid=1, done=[[0, 600]], age=600)
    partial = claim(tmp_path / "stale", FILE)
    assert isinstance(partial, Partial) and partial.done.total() == 600


def test_journal_for_another_blob_is_not_trusted(tmp_path: Path) -> None:
    import socket

    data = _abandoned(tmp_path, host=socket.gethostname(), pid=_dead_pid(), done=[[0, 600]])
    record = json.loads(journal_path_for(data).read_text())
    journal_path_for(data).write_text(json.dumps({**record, "size": 999}))
    partial = claim(tmp_path, FILE)
    assert isinstance(partial, Partial) and partial.done.total() == 0


def test_racing_claimants_never_share_a_partial(tmp_path: Path) -> None:
    """Many threads race for one abandoned partial: exactly one adopts it (rename is atomic)."""
    import socket

    for _ in range(20):
        directory = tmp_path / str(time.monotonic_ns())
        _abandoned(directory, host=socket.gethostname(), pid=_dead_pid(), done=[[0, 600]])
        results: list[object] = []
        barrier = threading.Barrier(6)

        def race(directory: Path = directory) -> None:
            barrier.wait()
            results.append(claim(directory, FILE))

        threads = [threading.Thread(target=race) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        partials = [r for r in results if isinstance(r, Partial)]
        adopted = [p for p in partials if p.done.total() == 600]
        assert len(adopted) <= 1
        paths = [p.data_path for p in partials]
        assert len(set(paths)) == len(paths)  # every writer owns its own file
        for p in partials:
            p.discard()


def test_prefix_hash_matches_whatever_order_ranges_land(tmp_path: Path) -> None:
    import hashlib
    import random

    from hfpull.prefix_hash import PrefixHasher

    data = os.urandom(300_000)
    file = RemoteFile("w.bin", len(data), "a" * 40, hashlib.sha256(data).hexdigest())
    for seed in range(5):
        partial = claim(tmp_path / str(seed), file)
        assert isinstance(partial, Partial)
        hasher = PrefixHasher(file, partial)
        chunks = [(o, data[o : o + 7000]) for o in range(0, len(data), 7000)]
        random.Random(seed).shuffle(chunks)
        for offset, chunk in chunks:
            partial.write(offset, chunk)
            partial.mark_done(offset, offset + len(chunk))
            hasher.landed(offset, chunk)
        assert hasher.finish() == file.sha256
        partial.discard()
