"""The real `hfpull` CLI in subprocesses: stdout contract, exit codes, one-line errors,
token hygiene, SIGKILL/SIGINT mid-download, and two processes sharing one cache."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hfpull.lock import create_lock, write_lock
from tests.conftest import ROOT, RunCli, cli_env, fast_settings
from tests.fakehub import FakeHub, Fault
from tests.helpers import MiB, all_files, leftovers, random_file, repo_dir, sha256_of

FAST = {"HFPULL_MAX_RETRIES": "2", "HFPULL_BACKOFF_BASE": "0.01", "HFPULL_READ_TIMEOUT": "3"}


@pytest.fixture
def env(tmp_path: Path, fake_hub: FakeHub) -> dict[str, str]:
    return cli_env(tmp_path, HF_ENDPOINT=fake_hub.url, **FAST)


@pytest.fixture
def small_repo(fake_hub: FakeHub) -> str:
    return fake_hub.add_repo(
        "org/model", {"config.json": b'{"a": 1}', "weights.safetensors": os.urandom(300_000)}
    )


def assert_one_line_error(stderr: str) -> None:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2 and lines[0].startswith("hfpull: error:"), stderr


def test_stdout_is_only_the_snapshot_path(
    run_cli: RunCli, env: dict, small_repo: str, tmp_path: Path
) -> None:
    cache = tmp_path / "c"
    result = run_cli("get", "org/model", "--cache-dir", str(cache), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{repo_dir(cache, 'org/model') / 'snapshots' / small_repo}\n"


def test_json_report(run_cli: RunCli, env: dict, small_repo: str, tmp_path: Path) -> None:
    result = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c"), "--json", env=env)
    report = json.loads(result.stdout)
    assert report["repo"] == "org/model" and report["commit"] == small_repo
    assert report["type"] == "model" and report["revision"] == "main"
    assert report["bytes_downloaded"] == 300_000 + 8
    files = {f["path"]: f for f in report["files"]}
    assert files["weights.safetensors"]["lfs"] is True
    assert files["weights.safetensors"]["status"] == "downloaded"
    assert files["weights.safetensors"]["source"].startswith("127.0.0.1:")
    assert set(files["config.json"]) == {"path", "size", "hash", "lfs", "status", "source"}


def test_dry_run_shows_the_plan_and_downloads_nothing(
    run_cli: RunCli, env: dict, small_repo: str, fake_hub: FakeHub, tmp_path: Path
) -> None:
    cache = tmp_path / "c"
    run_cli("get", "org/model", "--cache-dir", str(cache), "--include", "*.json", env=env)
    fake_hub.reset_log()
    result = run_cli("get", "org/model", "--cache-dir", str(cache), "--dry-run", "--json", env=env)
    plan = json.loads(result.stdout)
    actions = {f["path"]: f["action"] for f in plan["files"]}
    assert actions == {"config.json": "present", "weights.safetensors": "fetch"}
    assert plan["bytes_to_fetch"] == 300_000 and plan["free_disk_bytes"] > 0
    assert not [r for r in fake_hub.requests if "/resolve/" in r.path or r.server == "cdn"]
    text = run_cli("get", "org/model", "--cache-dir", str(cache), "--dry-run", env=env).stdout
    assert "fetch" in text and "weights.safetensors" in text and "free disk" in text


def test_progress_display_renders(
    run_cli: RunCli, env: dict, small_repo: str, tmp_path: Path
) -> None:
    result = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c"), "--progress", env=env)
    assert result.returncode == 0 and "files 2/2" in result.stderr


def test_repo_not_found_suggests_close_ids(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.add_repo("tencent/HunyuanOCR", {"config.json": b"{}"})
    result = run_cli(
        "get", "Tencent-Hunyuan/HunyuanOCR", "--cache-dir", str(tmp_path / "c"), env=env
    )
    assert result.returncode == 8
    assert_one_line_error(result.stderr)
    assert "did you mean tencent/HunyuanOCR" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--revision", "nope"], 8, "revision not found"),
        (["--include", "*.gguf"], 2, "matches the filters"),
        (["--revision", "../x"], 2, "invalid revision"),
        (["--repo-type", "dataset"], 8, "repository not found"),
    ],
)
def test_usage_and_not_found_errors(
    run_cli: RunCli,
    env: dict,
    small_repo: str,
    tmp_path: Path,
    args: list[str],
    code: int,
    text: str,
) -> None:
    result = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c"), *args, env=env)
    assert result.returncode == code, result.stderr
    assert_one_line_error(result.stderr)
    assert text in result.stderr


@pytest.mark.parametrize(
    ("args", "option", "value"),
    [
        (["get", "org/model", "--repo-type", "foo"], "--repo-type", "foo"),
        (["pack", "org/model", "-o", "x.tar", "--repo-type", "foo"], "--repo-type", "foo"),
        (["pack", "org/model", "-o", "x.tar", "--compression", "bz2"], "--compression", "bz2"),
        (["verify", "org/model", "--repo-type", "foo"], "--repo-type", "foo"),
        (["verify", "org/model", "--against", "nonsense"], "--against", "nonsense"),
        (["lock", "org/model", "--repo-type", "models"], "--repo-type", "models"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v[:1]),
)
def test_a_value_outside_a_closed_choice_is_a_usage_error(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, args: list[str], option: str, value: str
) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2, result.stderr  # was "internal error: ValueError", 1
    assert_one_line_error(result.stderr)
    message = result.stderr.splitlines()[0]
    assert f"Invalid value for '{option}'" in message and f"'{value}' is not one of" in message
    assert "internal error" not in message and "Traceback" not in result.stderr
    assert fake_hub.requests == []  # refused before anything else happened


def test_closed_choices_accept_their_values(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    from hfpull.archive.compression import KINDS
    from hfpull.cli import AgainstChoice, CompressionChoice, RepoTypeChoice
    from hfpull.models import REPO_TYPES

    assert [c.value for c in RepoTypeChoice] == list(REPO_TYPES)
    assert [c.value for c in CompressionChoice] == list(KINDS)
    assert [c.value for c in AgainstChoice] == ["hub", "manifest", "lock"]
    fake_hub.add_repo("org/data", {"train.csv": b"a,b\n"}, repo_type="dataset")
    lock = tmp_path / "data.lock"
    result = run_cli("lock", "org/data", "--repo-type", "dataset", "-o", str(lock), env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(lock.read_text())["repos"][0]["repo_type"] == "dataset"
    assert fake_hub.requests[0].path.startswith("/api/datasets/org/data/")


def test_bad_repo_id_is_a_usage_error(run_cli: RunCli, env: dict) -> None:
    result = run_cli("get", "../../etc", env=env)
    assert result.returncode == 2 and "invalid repo id" in result.stderr


@pytest.mark.parametrize(
    "args", [["get", "x", "--max-workers", "0"], ["nosuch"], ["get", "x", "--no-such-flag"]]
)
def test_a_bad_command_line_is_one_line_and_exit_2(
    run_cli: RunCli, env: dict, args: list[str]
) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert result.stderr.startswith("hfpull: error: ") and "╭" not in result.stderr


def test_gated_repo_needs_a_token_which_stays_on_the_hub(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.add_repo("org/gated", {"w.safetensors": os.urandom(5000)}, gated=True)
    fake_hub.tokens = {"hf_goodtoken123": {"org/gated"}}
    denied = run_cli("get", "org/gated", "--cache-dir", str(tmp_path / "c"), env=env)
    assert denied.returncode == 7 and "gated" in denied.stderr
    assert_one_line_error(denied.stderr)
    ok = run_cli(
        "get",
        "org/gated",
        "--cache-dir",
        str(tmp_path / "c"),
        "--token",
        "hf_goodtoken123",
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    hub_auth = [r for r in fake_hub.requests if r.server == "hub" and "authorization" in r.headers]
    assert hub_auth, "the token was never sent to the hub"
    assert not [r for r in fake_hub.requests if r.server == "cdn" and "authorization" in r.headers]
    assert "hf_goodtoken123" not in ok.stdout + ok.stderr


def test_invalid_token_is_reported_without_printing_it(
    run_cli: RunCli, env: dict, small_repo: str, tmp_path: Path
) -> None:
    result = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c"), "--debug",
                     env={**env, "HF_TOKEN": "hf_wrongtoken999"})  # fmt: skip
    assert result.returncode == 7 and "token was refused" in result.stderr
    assert "hf_wrongtoken999" not in result.stdout + result.stderr


def test_unreachable_sources_exit_3_naming_hosts(
    run_cli: RunCli, env: dict, tmp_path: Path
) -> None:
    result = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c"), "--endpoint",
                     "http://127.0.0.1:9", "--mirror", "http://127.0.0.1:7", env=env)  # fmt: skip
    assert result.returncode == 3
    assert_one_line_error(result.stderr)
    assert "127.0.0.1:9" in result.stderr and "127.0.0.1:7" in result.stderr


def test_hostile_file_names_are_refused_before_writing(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.add_repo("org/evil", {"ok.txt": b"fine", "../../evil.txt": b"pwned"})
    before = all_files(tmp_path)
    for target in (["--cache-dir", str(tmp_path / "c")], ["--local-dir", str(tmp_path / "l")]):
        result = run_cli("get", "org/evil", *target, env=env)
        assert result.returncode == 6 and "unsafe file name" in result.stderr
        assert_one_line_error(result.stderr)
    assert all_files(tmp_path) == before  # nothing written anywhere, not even inside the targets
    assert not [r for r in fake_hub.requests if "/resolve/" in r.path]


def test_disk_full_before_download(
    run_cli: RunCli, env: dict, small_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hfpull.errors import DiskError
    from hfpull.pull import download
    from tests.conftest import fast_settings

    monkeypatch.setattr("hfpull.pull.Session.free_disk", lambda self: 1000)
    with pytest.raises(DiskError, match=r"need 0\.3 MB, free 0\.0 MB"):
        download("org/model", settings=fast_settings(env["HF_ENDPOINT"], tmp_path / "c"))
    assert not (tmp_path / "c").exists() or leftovers(tmp_path / "c") == []


@pytest.mark.parametrize(
    ("flag", "below"), [("--cache-dir", ""), ("--local-dir", "sub")], ids=["cache", "below"]
)
def test_a_target_that_is_a_file_is_a_disk_error(
    run_cli: RunCli, env: dict, small_repo: str, tmp_path: Path, flag: str, below: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("get", "org/model", flag, str(blocker / below), env=env)
    assert result.returncode == 5, result.stderr  # was "internal error: FileExistsError", 1
    assert_one_line_error(result.stderr)
    assert f"cannot create the folder {blocker}" in result.stderr
    assert blocker.read_text() == "not a folder"


def _limit_file_size(limit: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_mid_download_keeps_the_partial(fake_hub: FakeHub, tmp_path: Path) -> None:
    big = random_file(tmp_path / "src", "w.bin", 8 * MiB)
    fake_hub.add_repo("org/big", {"w.safetensors": big})
    cache = tmp_path / "c"
    env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url, **FAST)
    cmd = [sys.executable, "-m", "hfpull", "get", "org/big", "--cache-dir", str(cache)]
    # One stream: RLIMIT_FSIZE refuses writes by offset (a full disk refuses all of them), so
    # with pieces in parallel the ones above 3 MiB would fail, and abort the file, at once.
    full = subprocess.run([*cmd, "--connections", "1"], env=env, capture_output=True,
                          text=True, cwd=ROOT, preexec_fn=_limit_file_size(3 * MiB),
                          timeout=60)  # fmt: skip
    assert full.returncode == 5, full.stderr
    assert_one_line_error(full.stderr)
    assert "partial is kept" in full.stderr
    assert list((repo_dir(cache, "org/big") / "blobs").glob("*.incomplete"))
    fake_hub.reset_log()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert again.returncode == 0, again.stderr
    assert sha256_of(Path(again.stdout.strip()) / "w.safetensors") == sha256_of(big)
    assert fake_hub.bytes_sent("/cdn/") < 8 * MiB - 2 * MiB  # resumed, not restarted


def _start_get(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hfpull", "get", *args],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_bytes(
    hub: FakeHub, at_least: int, proc: subprocess.Popen[str], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while hub.bytes_sent("/cdn/") < at_least:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "download never progressed"
        time.sleep(0.02)


def test_sigkill_mid_file_then_rerun_fetches_only_the_missing_bytes(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    size = 24 * MiB
    big = random_file(tmp_path / "src", "w.bin", size)
    fake_hub.add_repo("org/big", {"w.safetensors": big, "config.json": b"{}"})
    fake_hub.throttle_rate = 3 * MiB  # per connection: a slow link
    cache = tmp_path / "c"
    env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url, HFPULL_SEGMENT_SIZE=str(4 * MiB), **FAST)
    proc = _start_get(env, "org/big", "--cache-dir", str(cache), "--connections", "3")
    _wait_for_bytes(fake_hub, int(size * 0.4), proc)
    proc.kill()
    proc.wait()
    sent_before_kill = fake_hub.bytes_sent("/cdn/")
    assert not (repo_dir(cache, "org/big") / "snapshots").exists() or not list(
        (repo_dir(cache, "org/big") / "snapshots").rglob("w.safetensors")
    )
    fake_hub.throttle_rate = 0
    fake_hub.reset_log()
    rerun = subprocess.run(
        [sys.executable, "-m", "hfpull", "get", "org/big", "--cache-dir", str(cache), "--json"],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert sha256_of(Path(report["path"]) / "w.safetensors") == sha256_of(big)
    missing = size - sent_before_kill
    second = fake_hub.bytes_sent("/cdn/")
    assert second < missing * 1.10, f"refetched {second} bytes for {missing} missing"
    assert leftovers(cache) == []


def test_ctrl_c_exits_130_keeps_partial_and_resumes(fake_hub: FakeHub, tmp_path: Path) -> None:
    size = 12 * MiB
    big = random_file(tmp_path / "src", "w.bin", size)
    fake_hub.add_repo("org/big", {"w.safetensors": big})
    fake_hub.throttle_rate = 2 * MiB
    cache = tmp_path / "c"
    env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url, **FAST)
    proc = _start_get(env, "org/big", "--cache-dir", str(cache), "--connections", "1")
    _wait_for_bytes(fake_hub, 2 * MiB, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    partials = list((repo_dir(cache, "org/big") / "blobs").glob("*.incomplete"))
    assert len(partials) == 1 and partials[0].stat().st_size >= MiB
    fake_hub.throttle_rate = 0
    fake_hub.reset_log()
    cmd = [sys.executable, "-m", "hfpull", "get", "org/big", "--cache-dir", str(cache)]
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert rerun.returncode == 0
    assert fake_hub.bytes_sent("/cdn/") <= size - MiB


def test_several_processes_share_one_cache_safely(fake_hub: FakeHub, tmp_path: Path) -> None:
    """Four processes, no file locks involved: one downloads each blob, the others wait."""
    size = 8 * MiB
    big = random_file(tmp_path / "src", "w.bin", size)
    fake_hub.add_repo("org/big", {"w.safetensors": big, "a.json": b"[]"})
    fake_hub.throttle_rate = 4 * MiB
    cache = tmp_path / "c"
    env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url, **FAST)
    procs = [_start_get(env, "org/big", "--cache-dir", str(cache)) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert len({out for out, _ in outs}) == 1
    assert sha256_of(Path(outs[0][0].strip()) / "w.safetensors") == sha256_of(big)
    assert fake_hub.bytes_sent("/cdn/") <= size * 1.1  # the second process waited, not refetched
    assert leftovers(cache) == []


def test_ctrl_c_during_a_stalled_read_exits_promptly(fake_hub: FakeHub, tmp_path: Path) -> None:
    """A worker blocked in a stalled read must not hold Ctrl-C for the whole read timeout."""
    size = 4 * MiB
    big = random_file(tmp_path / "src", "w.bin", size)
    fake_hub.add_repo("org/big", {"w.safetensors": big})
    fake_hub.faults.append(Fault("stall", server="cdn", after_bytes=MiB, seconds=25, times=1))
    cache = tmp_path / "c"
    env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url, HFPULL_READ_TIMEOUT="30")
    proc = _start_get(env, "org/big", "--cache-dir", str(cache), "--connections", "1")
    _wait_for_bytes(fake_hub, MiB, proc)
    time.sleep(0.5)  # now blocked in the stalled read
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "interrupted" in stderr
    # Docs: "within about 2 s". A loose bound, far below what a blocked worker would cost
    # (the 25 s stall, or the 30 s read timeout).
    assert time.monotonic() - started < 12
    journal = next((repo_dir(cache, "org/big") / "blobs").glob("*.journal"))
    assert json.loads(journal.read_text())["done"] == [[0, MiB]]  # the progress was recorded


# -- documented promises, through the real CLI -----------------------------------------------


def test_a_hash_failing_twice_exits_4_and_keeps_nothing(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    fake_hub.add_repo("org/model", {"w.safetensors": data})
    fake_hub.faults.append(Fault("flip", server="cdn", after_bytes=1234))  # every time
    cache = tmp_path / "c"
    result = run_cli("get", "org/model", "--cache-dir", str(cache), env=env)
    assert result.returncode == 4, result.stderr
    assert_one_line_error(result.stderr)
    wrong = bytearray(data)
    wrong[1234] ^= 1
    expected, actual = hashlib.sha256(data).hexdigest(), hashlib.sha256(wrong).hexdigest()
    assert "w.safetensors: sha256 mismatch from 127.0.0.1:" in result.stderr
    assert f"expected {expected}, got {actual}" in result.stderr
    assert fake_hub.bytes_sent("/cdn/") == 2 * len(data)  # fetched twice, then it gave up
    assert not list(repo_dir(cache, "org/model").rglob("w.safetensors"))
    assert not (repo_dir(cache, "org/model") / "blobs" / expected).exists()
    assert leftovers(cache) == []


def test_get_lock_fails_rather_than_drift(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    commit = fake_hub.add_repo(
        "org/model", {"config.json": b"v1", "w.safetensors": os.urandom(5000)}
    )
    lock = tmp_path / "hfpull.lock"
    write_lock(lock, create_lock(["org/model"], settings=fast_settings(fake_hub.url, tmp_path)))
    pristine = json.loads(lock.read_text())
    cache = tmp_path / "c"

    def get_with(document: dict) -> subprocess.CompletedProcess[str]:
        lock.write_text(json.dumps(document))
        fake_hub.reset_log()
        return run_cli("get", "--lock", str(lock), "--cache-dir", str(cache), env=env)

    changed = json.loads(json.dumps(pristine))
    [weights] = [f for f in changed["repos"][0]["files"] if f["path"] == "w.safetensors"]
    weights["sha256"] = "0" * 64  # the Hub publishes other bytes under this path now
    result = get_with(changed)
    assert result.returncode == 4, result.stderr
    assert_one_line_error(result.stderr)
    assert f"org/model@{commit[:12]}: 'w.safetensors' on the Hub differs from the lock" in (
        result.stderr
    )
    assert not [r for r in fake_hub.requests if "/resolve/" in r.path or r.server == "cdn"]

    gone = json.loads(json.dumps(pristine))
    gone["repos"][0]["files"].append({"path": "gone.txt", "size": 1, "git_sha1": "1" * 40})
    result = get_with(gone)
    assert (
        result.returncode == 4
        and "'gone.txt' on the Hub differs from the lock (it is gone)" in (result.stderr)
    )

    moved = json.loads(json.dumps(pristine))
    moved["repos"][0]["commit"] = "2" * 40  # a commit the Hub does not have (force-pushed)
    result = get_with(moved)
    assert result.returncode == 8, result.stderr
    assert_one_line_error(result.stderr)
    assert "revision not found" in result.stderr
    assert not cache.exists() or not list(cache.rglob("w.safetensors"))


PLANTED_BUG = """
import hfpull.pull

def planted_bug(self, *args, **kwargs):
    raise RuntimeError("planted bug")

hfpull.pull.Session.plan = planted_bug
from hfpull.cli import main
main()
"""


def test_an_internal_error_exits_1_in_one_line(env: dict, small_repo: str, tmp_path: Path) -> None:
    """No real bug is known to reach the CLI, so one is planted (in this subprocess only)."""
    cmd = [sys.executable, "-c", PLANTED_BUG, "get", "org/model", "--cache-dir", str(tmp_path)]
    plain = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 1, plain.stderr
    assert (
        plain.stderr
        == "hfpull: internal error: RuntimeError: planted bug\nhint: run with --debug\n"
    )
    assert plain.stdout == ""
    debug = subprocess.run(
        [*cmd, "--debug"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "in planted_bug" in debug.stderr
    assert debug.stderr.endswith(plain.stderr)


def test_sigterm_exits_130_keeps_the_partial_and_a_rerun_completes(
    fake_hub: FakeHub, tmp_path: Path, run_cli: RunCli
) -> None:
    size = 8 * MiB
    big = random_file(tmp_path / "src", "w.bin", size)
    fake_hub.add_repo("org/big", {"w.safetensors": big})
    fake_hub.throttle_rate = 2 * MiB
    cache = tmp_path / "c"
    env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url, **FAST)
    proc = _start_get(env, "org/big", "--cache-dir", str(cache), "--connections", "1")
    _wait_for_bytes(fake_hub, 2 * MiB, proc)
    proc.send_signal(signal.SIGTERM)
    out, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert out == "" and "interrupted" in stderr and "Traceback" not in stderr
    assert not list(repo_dir(cache, "org/big").rglob("snapshots/*/w.safetensors"))
    fake_hub.throttle_rate = 0
    plan = json.loads(
        run_cli("get", "org/big", "--cache-dir", str(cache), "--dry-run", "--json", env=env).stdout
    )
    [entry] = plan["files"]
    held = entry["partial_bytes"]
    assert entry["action"] == "fetch" and 0 < held < size  # the partial was kept
    assert plan["bytes_to_fetch"] == size - held
    fake_hub.reset_log()
    rerun = run_cli("get", "org/big", "--cache-dir", str(cache), "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert sha256_of(Path(report["path"]) / "w.safetensors") == sha256_of(big)
    assert report["bytes_downloaded"] == fake_hub.bytes_sent("/cdn/") == size - held
    assert leftovers(cache) == []


def test_a_gzip_encoded_body_is_refused_before_a_byte_is_written(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    fake_hub.add_repo("org/model", {"w.safetensors": data})
    # Chunked too: with no Content-Length, only Content-Encoding tells this body apart.
    fake_hub.faults += [
        Fault("gzip", server="cdn", times=1),
        Fault("chunked", server="cdn", times=1),
    ]
    ok = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c"), "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert sha256_of(Path(report["path"]) / "w.safetensors") == hashlib.sha256(data).hexdigest()
    assert report["bytes_downloaded"] == len(data)  # nothing of the gzip body was written
    assert [r.fault for r in fake_hub.requests if r.server == "cdn"] == ["gzip,chunked", None]
    fake_hub.faults = [Fault("gzip", server="cdn")]
    failed = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c2"), env=env)
    assert failed.returncode == 3, failed.stderr
    assert_one_line_error(failed.stderr)
    assert "compressed body (gzip) refused" in failed.stderr


def test_chunked_bodies_without_content_length_download_and_resume(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    fake_hub.add_repo("org/model", {"config.json": b'{"a": 1}', "w.safetensors": data})
    fake_hub.faults += [
        Fault("chunked"),  # every 2xx GET: the API's JSON, config.json, the CDN
        Fault("short", server="cdn", after_bytes=100_000, times=1),  # ends before the last chunk
    ]
    result = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c"), "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sha256_of(Path(report["path"]) / "w.safetensors") == hashlib.sha256(data).hexdigest()
    bodies = [r for r in fake_hub.requests if r.method == "GET" and 200 <= r.status < 300]
    assert len(bodies) >= 4 and all("chunked" in (r.fault or "") for r in bodies)
    # The cut-short body was resumed at byte 100 000, not restarted.
    assert report["bytes_downloaded"] == len(data) + len(b'{"a": 1}')
    assert fake_hub.bytes_sent("/cdn/") == len(data)


def test_a_content_range_with_the_wrong_total_is_refused(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    fake_hub.add_repo("org/model", {"w.safetensors": data})
    fake_hub.faults.append(Fault("wrong_total", server="cdn", times=2))
    ok = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c"), "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert sha256_of(Path(report["path"]) / "w.safetensors") == hashlib.sha256(data).hexdigest()
    assert report["bytes_downloaded"] == len(data)
    cdn = [r.fault for r in fake_hub.requests if r.server == "cdn"]
    assert cdn == ["wrong_total", "wrong_total", None]
    fake_hub.faults = [Fault("wrong_total", server="cdn")]
    failed = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c2"), env=env)
    assert failed.returncode == 3, failed.stderr
    assert_one_line_error(failed.stderr)
    assert f"wrong Content-Range 'bytes 0-{len(data) - 1}/{len(data) + 1}'" in failed.stderr


def test_a_cdn_refusing_every_fresh_url_exits_3(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.add_repo("org/model", {"w.safetensors": os.urandom(300_000)})
    fake_hub.faults.append(Fault("status", server="cdn", status=403))  # every signed URL
    result = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c"), env=env)
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result.stderr)
    assert "the CDN keeps refusing fresh URLs" in result.stderr
    cdn = [r.status for r in fake_hub.requests if r.server == "cdn"]
    redirects = [r for r in fake_hub.requests if r.server == "hub" and r.status == 302]
    assert set(cdn) == {403}
    # Every CDN try used a freshly resolved URL, and it gave up after a bounded number.
    assert 2 <= len(cdn) == len(redirects) <= 20


@pytest.mark.parametrize("how", ["--mirror", "HFPULL_MIRRORS"])
def test_the_token_reaches_named_sources_but_never_their_cdn(
    run_cli: RunCli, fake_hub: FakeHub, tmp_path: Path, how: str
) -> None:
    files = {
        "a.safetensors": os.urandom(5000),
        "b.safetensors": os.urandom(5000),
        "config.json": b"{}",
    }
    token = "hf_sekrit_4242"
    fake_hub.add_repo("org/private", files, private=True)  # useless without the token
    fake_hub.tokens = {token: {"org/private"}}
    with FakeHub() as mirror:
        mirror.add_repo("org/private", files, private=True)
        mirror.tokens = {token: {"org/private"}}
        # The mirror lacks b.safetensors, so the origin (HF_ENDPOINT) supplies it.
        mirror.faults.append(Fault("status", server="hub", match="b.safetensors", status=404))
        env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url, HF_TOKEN=token, **FAST)
        args = ["get", "org/private", "--cache-dir", str(tmp_path / "c"), "--json"]
        if how == "--mirror":
            args += ["--mirror", mirror.url]
        else:
            env["HFPULL_MIRRORS"] = mirror.url
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr
        mirror_requests = mirror.requests
    sources = {f["path"]: f["source"] for f in json.loads(result.stdout)["files"]}
    assert sources["a.safetensors"] == mirror.url.removeprefix("http://")
    assert sources["b.safetensors"] == fake_hub.url.removeprefix("http://")
    for requests in (mirror_requests, fake_hub.requests):
        hub_side = [r for r in requests if r.server == "hub"]
        cdn_side = [r for r in requests if r.server == "cdn"]
        assert hub_side and all(
            r.headers.get("authorization") == f"Bearer {token}" for r in hub_side
        )
        assert cdn_side and not [r for r in cdn_side if "authorization" in r.headers]
    assert token not in result.stdout + result.stderr


def test_two_paths_with_the_same_content_are_fetched_once(
    run_cli: RunCli, env: dict, fake_hub: FakeHub, tmp_path: Path
) -> None:
    weights, note = os.urandom(300_000), b"the same small text\n"
    fake_hub.add_repo(
        "org/model",
        {"a/w.safetensors": weights, "b/w.safetensors": weights, "x.txt": note, "y/x.txt": note},
    )
    result = run_cli("get", "org/model", "--cache-dir", str(tmp_path / "c"), "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    snap = Path(report["path"])
    assert (snap / "a/w.safetensors").read_bytes() == (snap / "b/w.safetensors").read_bytes()
    assert (snap / "x.txt").read_bytes() == (snap / "y/x.txt").read_bytes() == note
    assert (snap / "a/w.safetensors").resolve() == (snap / "b/w.safetensors").resolve()
    assert {f["status"] for f in report["files"]} == {"downloaded"}
    assert report["bytes_downloaded"] == len(weights) + len(note)
    resolves = [r.path for r in fake_hub.requests if "/resolve/" in r.path]
    assert len(resolves) == 2  # one per distinct blob
    assert fake_hub.bytes_sent("/cdn/") == len(weights)
    assert fake_hub.bytes_sent("/resolve/") == len(note)
