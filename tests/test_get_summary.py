"""The end-of-get summary on stderr (and the same figures in --json), checked against what
the fake Hub actually sent: a fresh run, a no-op rerun, a run resumed after SIGKILL, a
partial failure, and --quiet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hfpull.cli.render import human
from tests.conftest import ROOT, RunCli, cli_env
from tests.fakehub import FakeHub, Fault
from tests.helpers import MiB, random_file

FAST = {"HFPULL_MAX_RETRIES": "2", "HFPULL_BACKOFF_BASE": "0.01", "HFPULL_READ_TIMEOUT": "3"}


@pytest.fixture
def env(tmp_path: Path, fake_hub: FakeHub) -> dict[str, str]:
    return cli_env(tmp_path, HF_ENDPOINT=fake_hub.url, **FAST)


def content_bytes(hub: FakeHub) -> int:
    """Body bytes of file content (hub and CDN), leaving out the API's JSON."""
    return hub.bytes_sent() - hub.bytes_sent("/api/")


def summary(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("hfpull: ")]


def test_the_summary_says_what_the_hub_sent(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    size = 3 * MiB
    fake_hub.add_repo("org/model", {"config.json": b'{"a": 1}', "w.safetensors": os.urandom(size)})
    cache = tmp_path / "c"
    first = run_cli("get", "org/model", "--cache-dir", str(cache), "--include", "*.json", env=env)
    assert first.returncode == 0, first.stderr
    assert summary(first.stderr)[0].startswith("hfpull: org/model: fetched 1 file: 8 B in ")
    fake_hub.reset_log()

    args = ("get", "org/model", "--cache-dir", str(cache), "--connections", "3", "--json")
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout stays pure JSON; the summary is on stderr
    sent = content_bytes(fake_hub)
    assert report["bytes_downloaded"] == sent == size
    assert report["bytes_resumed"] == 0
    assert 1 <= report["connections"] <= 3
    hosts = {f["source"] for f in report["files"] if f["status"] == "downloaded"}
    assert set(report["sources"]) == hosts and sum(report["sources"].values()) == sent

    line, sources = summary(result.stderr)
    assert line.startswith("hfpull: org/model: fetched 1 file (1 already present): ")
    assert f"{human(sent)} in " in line and "0 B resumed" in line
    (host,) = hosts
    assert sources == f"hfpull: sources: {host} {human(sent)}"

    fake_hub.reset_log()
    again = run_cli(*args, env=env)
    assert summary(again.stderr) == ["hfpull: org/model: 2 files already present, nothing fetched"]
    noop = json.loads(again.stdout)
    assert noop["bytes_downloaded"] == 0 == content_bytes(fake_hub)
    assert noop["sources"] == {} and noop["connections"] == 0


def test_a_resumed_run_reports_the_bytes_it_took_over(fake_hub: FakeHub, tmp_path: Path) -> None:
    size = 24 * MiB
    fake_hub.add_repo("org/big", {"w.safetensors": random_file(tmp_path / "src", "w.bin", size)})
    fake_hub.throttle_rate = 3 * MiB  # per connection: slow enough to kill it half-way
    cache = tmp_path / "c"
    env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url, HFPULL_SEGMENT_SIZE=str(4 * MiB), **FAST)
    cmd = [sys.executable, "-m", "hfpull", "get", "org/big", "--cache-dir", str(cache)]
    proc = subprocess.Popen([*cmd, "--connections", "3"], env=env, cwd=ROOT)
    try:
        while content_bytes(fake_hub) < size * 0.4:
            assert proc.poll() is None, "finished before it could be killed"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    fake_hub.throttle_rate = 0
    fake_hub.reset_log()

    rerun = subprocess.run(
        [*cmd, "--json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    resumed, downloaded = report["bytes_resumed"], report["bytes_downloaded"]
    assert downloaded == content_bytes(fake_hub)  # what crossed the wire this time
    assert resumed > 0 and resumed + downloaded == size  # the rest came from the partial
    (line, _sources) = summary(rerun.stderr)
    assert f"{human(downloaded)} in " in line and f", {human(resumed)} resumed, " in line


def test_a_partial_failure_says_what_landed_before_the_error(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    good = os.urandom(300_000)
    fake_hub.add_repo("org/model", {"good.safetensors": good, "bad.safetensors": b"x" * 5000})
    fake_hub.faults.append(Fault("status", match="bad.safetensors", server="hub", status=500))
    result = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c"), env=env)
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("hfpull: org/model: fetched 1 file, 1 failed before stopping: ")
    assert f"{human(len(good))} in " in lines[0]
    assert content_bytes(fake_hub) == len(good)
    assert lines[1].startswith("hfpull: error:") and "bad.safetensors" in lines[1]

    quiet = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "q"), "-q", env=env)
    assert quiet.returncode == 3
    assert quiet.stderr.startswith("hfpull: error:")  # -q: the error alone, no summary


def test_quiet_prints_no_summary(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.add_repo("org/model", {"config.json": b"{}"})
    result = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c"), "--quiet", env=env)
    assert result.returncode == 0 and result.stderr == ""
