#!/usr/bin/env python
"""hfpull against its peers on one WAN model, in one run (issue 9's benchmark suite).

The fake Hub of tests/fakehub runs in its own process (benchmarks/fakehub_stats.py) with the
WAN model of tests/fakehub/wan.py: a cap per connection, an aggregate cap shared by every
response, and a latency per request and per new connection. Every download is a subprocess
into a fresh empty target, timed from spawn to exit, its CPU and peak RSS read with wait4,
and every file checked by size and SHA-256 before the run counts.

- S1 one GGUF-like file; 20 MB/s per connection, 200 MB/s aggregate, 40 ms.
- S2 a sharded model: 4 safetensors shards + config and tokenizer files; the same link.
- S3 metadata-bound: 500 files of 4-64 KiB plus one 100 MiB file; 40 ms, no bandwidth cap.
- S4 no caps: one 1 GiB file, each tool's ceiling on this machine (hfpull verifies as it goes).
- S5 resume: SIGKILL when the fake Hub has sent 50% of the file, then the same command again;
  bytes on the wire / file size. S1's link.
- S6 the mirror: benchmarks/bench_serve.py (run with --serve; otherwise its latest table in
  docs/mirror.md is referenced).

Tools: `hfpull get` (defaults), `hf download` (huggingface_hub's CLI), aria2c -x16 -s16 through
an input file as hfd.sh does, curl to disk (one stream; single-file scenarios only).

    python benchmarks/bench_suite.py [--quick] [--sizes default|issue] [--runs N]
        [--scenarios S1,S3] [--tools hfpull,hf,aria2c,curl] [--serve] [--out MD] [--json FILE]

Prints a Markdown report (table, targets met or not, notes) on stdout; exit 1 when an hfpull
run fails or gives wrong bytes (a peer's failure is reported in its row).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_get import (  # noqa: E402
    RUN_TIMEOUT,
    BenchError,
    Measured,
    clean_env,
    make_big_file,
    process_cpu_seconds,
    sha256_of,
    snapshot_dir,
)
from benchmarks.bench_serve import Hub, fake_hub  # noqa: E402
from benchmarks.suite_report import (  # noqa: E402
    HFPULL,
    MB,
    Link,
    MiB,
    Row,
    Run,
    as_json,
    render_resume,
    render_table,
    render_targets,
    targets,
)

KiB = 1 << 10
GiB = 1 << 30
BIN = Path(sys.executable).parent  # the venv's console scripts: hfpull, hf
SPAWN = ROOT / "benchmarks" / "rusage_spawn.py"

WAN = Link(per_connection=20 * MB, aggregate=200 * MB, latency=0.040)
LATENCY_ONLY = Link(0, 0, 0.040)
OPEN = Link(0, 0, 0.0)
KILL_AT = 0.5  # S5: share of the file sent before SIGKILL
POLL = 0.02  # seconds between byte counts while waiting for KILL_AT
SMALL_SEED = 9  # S3's file sizes are reproducible; contents are fresh random bytes
HELP_RUNS = 10
LINK_CHECK_STREAMS = 16


@dataclass(frozen=True)
class Sizes:
    name: str
    s1: int
    s2_shard: int
    s3_files: int
    s3_big: int
    s4: int
    s5: int
    why: str

    def describe(self) -> str:
        return (
            f"S1 {size(self.s1)}, S2 4 × {size(self.s2_shard)}, S3 {self.s3_files} small files "
            f"+ {size(self.s3_big)}, S4 {size(self.s4)}, S5 {size(self.s5)}"
        )


SIZES = {
    "quick": Sizes(
        "quick", 64 * MiB, 16 * MiB, 100, 8 * MiB, 128 * MiB, 64 * MiB, "a smoke run, not a result"
    ),
    "default": Sizes(
        "default",
        1 * GiB,
        256 * MiB,
        500,
        100 * MiB,
        1 * GiB,
        256 * MiB,
        "the issue's S1 and S2 (2 GiB, 4 × 512 MiB) and S5 (2 GiB) scaled down so the run fits "
        "in ~15 min on 2 cores: the single-stream peers (hf download, curl) take 54 s per GiB "
        "at 20 MB/s, three times each; 1 GiB at 200 MB/s is still 5.4 s of link-bound transfer "
        "against ~0.5 s of start-up",
    ),
    "issue": Sizes(
        "issue", 2 * GiB, 512 * MiB, 500, 100 * MiB, 1 * GiB, 2 * GiB, "the issue's sizes"
    ),
}


def size(n: int) -> str:
    if n >= GiB and n % GiB == 0:
        return f"{n // GiB} GiB"
    return f"{n / MiB:.0f} MiB" if n % MiB == 0 else f"{n / MiB:.1f} MiB"


# -- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFile:
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Repo:
    repo_id: str
    files: dict[str, DataFile]  # repo path -> the served bytes

    @property
    def nbytes(self) -> int:
        return sum(f.size for f in self.files.values())


class Data:
    """Random test files, made once per invocation and shared where a scenario allows."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[tuple[str, int], DataFile] = {}

    def file(self, name: str, nbytes: int) -> DataFile:
        key = (name, nbytes)
        if key not in self._made:
            path = self.root / f"{len(self._made):04d}-{Path(name).name}"
            big = make_big_file(path, nbytes)
            self._made[key] = DataFile(big.path, big.size, big.sha256)
        return self._made[key]


def s1_repo(data: Data, sizes: Sizes) -> Repo:
    name = "model-Q4_K_M.gguf"
    return Repo("bench/s1-gguf", {name: data.file("big", sizes.s1)})


def s2_repo(data: Data, sizes: Sizes) -> Repo:
    files = {
        f"model-{i:05d}-of-00004.safetensors": data.file(f"shard{i}", sizes.s2_shard)
        for i in range(1, 5)
    }
    extras = {
        "config.json": 1 * KiB,
        "generation_config.json": 200,
        "model.safetensors.index.json": 30 * KiB,
        "tokenizer.json": 2 * MiB,  # above the 1 MiB threshold: LFS, as on the real Hub
        "tokenizer_config.json": 50 * KiB,
        "special_tokens_map.json": 500,
    }
    files.update({name: data.file(name, n) for name, n in extras.items()})
    return Repo("bench/s2-sharded", files)


def s3_repo(data: Data, sizes: Sizes) -> Repo:
    rng = random.Random(SMALL_SEED)
    files = {
        f"data/part{i % 10}/sample_{i:04d}.json": data.file(f"small{i}", rng.randint(4, 64) * KiB)
        for i in range(sizes.s3_files)
    }
    files["model.safetensors"] = data.file("s3big", sizes.s3_big)
    return Repo("bench/s3-many", files)


def s4_repo(data: Data, sizes: Sizes) -> Repo:
    return Repo("bench/s4-open", {"model.safetensors": data.file("big", sizes.s4)})


def s5_repo(data: Data, sizes: Sizes) -> Repo:
    return Repo("bench/s5-resume", {"model-Q4_K_M.gguf": data.file("big", sizes.s5)})


# -- scenarios and tools ---------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    make: Callable[[Data, Sizes], Repo]
    link: Link
    tools: tuple[str, ...]
    resume: bool = False
    link_check: bool = False  # first measure what the fake Hub itself delivers on this link


MULTI = ("hfpull", "hf", "aria2c")  # repo downloaders
SINGLE = ("hfpull", "hf", "aria2c", "curl")  # + curl for one-file scenarios

SCENARIOS = (
    Scenario("S1", "one big file, WAN", s1_repo, WAN, SINGLE, link_check=True),
    Scenario("S2", "sharded model, WAN", s2_repo, WAN, MULTI),
    Scenario("S3", "many small files + one, 40 ms", s3_repo, LATENCY_ONLY, MULTI),
    Scenario("S4", "one file, no caps", s4_repo, OPEN, (*SINGLE, "curl+sha256sum", "curl+fsync")),
    Scenario("S5", "resume after SIGKILL at 50%, WAN", s5_repo, WAN, SINGLE, resume=True),
)
TOOL_KEYS = ("hfpull", "hf", "aria2c", "curl")

ARIA2_FLAGS = ("-x16", "-s16", "-k1M", "-j5", "-c", "--file-allocation=none")


@dataclass(frozen=True)
class Tool:
    key: str
    label: str
    settings: str
    layout: str  # "cache": HF cache (snapshots/) in the target; "plain": files in the target
    executable: str | None  # None: not installed

    @property
    def missing(self) -> str | None:
        if self.executable is not None:
            return None
        return {
            "aria2c": "aria2c not installed (apt-get install -y aria2)",
            "hf": "hf (huggingface_hub's CLI) not found beside this Python",
        }.get(self.key, f"{self.key} not installed")


def _beside_python(name: str) -> str | None:
    candidate = BIN / name
    return str(candidate) if candidate.exists() else shutil.which(name)


def tools() -> dict[str, Tool]:
    curl = shutil.which("curl")
    return {
        "hfpull": Tool("hfpull", "hfpull get", "defaults", "cache", _beside_python("hfpull")),
        "hf": Tool(
            "hf",
            "hf download",
            "defaults (8 files at once, 1 stream per file)",
            "cache",
            _beside_python("hf"),
        ),
        "aria2c": Tool(
            "aria2c",
            "aria2c",
            " ".join(ARIA2_FLAGS) + ", -i input file (as hfd.sh)",
            "plain",
            shutil.which("aria2c"),
        ),
        "curl": Tool("curl", "curl", "-L -C -, one stream", "plain", curl),
        "curl+sha256sum": Tool(
            "curl+sha256sum",
            "curl + sha256sum",
            "curl as above, then sha256sum (verification included)",
            "plain",
            curl if shutil.which("sha256sum") else None,
        ),
        "curl+fsync": Tool(
            "curl+fsync",
            "curl + fsync",
            "curl as above, then `sync FILE` (durable on disk, as hfpull's publish is)",
            "plain",
            curl if shutil.which("sync") else None,
        ),
    }


def command(
    tool: Tool, repo: Repo, hub: Hub, target: Path, work: Path
) -> tuple[list[str], dict[str, str]]:
    """The tool's command line and extra environment for downloading `repo` into `target`."""
    exe = tool.executable
    assert exe is not None
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(target), "NO_PROXY": "127.0.0.1"}
    if tool.key in ("hfpull", "hf"):
        verb = "get" if tool.key == "hfpull" else "download"
        return [exe, verb, repo.repo_id], env
    if tool.key == "aria2c":
        # hfd.sh: list the repo through the API, write an input file (dir=, out= per file), run
        # aria2c on it. The listing is one timed request here; the input file's content is
        # what that listing yields, written ahead.
        lines = [
            f"{hub.url}/{repo.repo_id}/resolve/main/{name}\n  dir={target}\n  out={name}\n"
            for name in repo.files
        ]
        (work / "aria2c_urls.txt").write_text("".join(lines))
        listing = f"{hub.url}/api/models/{repo.repo_id}?blobs=true"
        script = 'curl -sSf -o listing.json "$1" && shift && exec "$@"'
        aria = [exe, *ARIA2_FLAGS, "-q", "--summary-interval=0", "-i", "aria2c_urls.txt"]
        return ["sh", "-c", script, "sh", listing, *aria], env
    (name,) = repo.files  # curl: single-file scenarios only
    out = target / name
    curl = [exe, "-sSfL", "--create-dirs", "-C", "-", "-o", str(out)]
    url = f"{hub.url}/{repo.repo_id}/resolve/main/{name}"
    if tool.key == "curl":
        return [*curl, url], env
    then = 'sha256sum "$0" >/dev/null' if tool.key == "curl+sha256sum" else 'sync "$0"'
    return ["sh", "-c", f'"$@" && {then}', str(out), *curl, url], env


# -- running ---------------------------------------------------------------------------------


def verify(tool: Tool, repo: Repo, target: Path) -> None:
    root = snapshot_dir(target, repo.repo_id) if tool.layout == "cache" else target
    got = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    if got != sorted(repo.files):
        extra = sorted(set(got) - set(repo.files))[:3]
        missing = sorted(set(repo.files) - set(got))[:3]
        raise BenchError(f"{len(got)} files, expected {len(repo.files)}: extra {extra}, "
                         f"missing {missing}")  # fmt: skip
    for name, want in repo.files.items():
        path = root / name
        if path.stat().st_size != want.size or sha256_of(path) != want.sha256:
            raise BenchError(f"{name}: wrong bytes (size or sha256 differs from the served file)")


def wire_bytes(summary: dict[str, Any]) -> int:
    return int(summary["hub_body_bytes"]) + int(summary["cdn_body_bytes"])


def wait_idle(hub: Hub, limit: float = 10.0) -> None:
    """Until the last run's connections are closed, so they do not count in the next peak."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        conns = hub.summary()["connections"]
        if not any(c["open"] for c in conns.values()):
            return
        time.sleep(0.05)


def measure(
    cmd: Sequence[str],
    env: dict[str, str],
    work: Path,
    kill_when: Callable[[], bool] | None = None,
    tag: str = "",
) -> tuple[Measured, bool]:
    """Run `cmd` through rusage_spawn.py (its own peak RSS, not ours); SIGKILL the tool once
    `kill_when()` holds. Returns the measurement and whether the tool was killed."""
    result = work / f"rusage{tag}.json"
    pid_file = work / f"rusage{tag}.json.pid"
    result.unlink(missing_ok=True)
    pid_file.unlink(missing_ok=True)
    out_path, err_path = work / f"stdout{tag}.txt", work / f"stderr{tag}.txt"
    killed = timed_out = False
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-I", str(SPAWN), str(result), *cmd],
            stdout=out, stderr=err, env=env, cwd=work,
        )  # fmt: skip
        deadline = time.monotonic() + RUN_TIMEOUT
        while proc.poll() is None:
            timed_out = time.monotonic() > deadline
            if timed_out or (kill_when is not None and kill_when()):
                _kill_tool(pid_file)
                killed = True
                proc.wait()
                break
            time.sleep(POLL if kill_when is not None else 0.1)
    if not result.exists():
        raise BenchError(f"rusage_spawn failed: {err_path.read_text(errors='replace')[-2000:]}")
    got = json.loads(result.read_text())
    if timed_out:
        raise BenchError(f"{' '.join(cmd)}\nkilled after {RUN_TIMEOUT:.0f} s")
    if not killed and got["exit"] != 0:
        tail = err_path.read_text(errors="replace")[-2000:]
        raise BenchError(f"{' '.join(cmd)}\nexited with {got['exit']}:\n{tail}")
    measured = Measured(got["seconds"], got["maxrss_kib"], got["cpu_seconds"], out_path.read_text())
    return measured, killed


def _kill_tool(pid_file: Path) -> None:
    deadline = time.monotonic() + 5
    while not pid_file.exists() and time.monotonic() < deadline:  # written right after fork
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def run_once(scenario: Scenario, tool: Tool, repo: Repo, hub: Hub, work: Path) -> Run:
    if work.exists():
        shutil.rmtree(work)
    target = work / "target"
    target.mkdir(parents=True)  # fresh and empty for every run
    cmd, extra = command(tool, repo, hub, target, work)
    env = clean_env(work / "home", **extra)
    # Dirty pages of the last run would slow this one (kernel writeback; see bench_get.py).
    os.sync()
    wait_idle(hub)
    before = hub.summary(reset_peak=True)
    server_cpu = process_cpu_seconds(hub.pid)
    killed_at = None
    if scenario.resume:
        first, killed = measure(
            cmd, env, work, lambda: wire_bytes(hub.summary()) - wire_bytes(before)
            >= KILL_AT * repo.nbytes, tag="-1",
        )  # fmt: skip
        if not killed:
            raise BenchError(f"finished before {KILL_AT:.0%} of the bytes: use a larger file")
        killed_at = (wire_bytes(hub.summary()) - wire_bytes(before)) / repo.nbytes
        wait_idle(hub)
        second, _ = measure(cmd, env, work)
        result = Measured(
            first.seconds + second.seconds,
            max(first.rss_kib, second.rss_kib),
            first.cpu_seconds + second.cpu_seconds,
            second.stdout,
        )
    else:
        result, _ = measure(cmd, env, work)
    after = hub.summary()
    server_cpu = process_cpu_seconds(hub.pid) - server_cpu
    verify(tool, repo, target)
    shutil.rmtree(work)  # a GiB per run adds up
    conns = after["connections"]
    return Run(
        seconds=result.seconds,
        cpu_seconds=result.cpu_seconds,
        rss_kib=result.rss_kib,
        wire_bytes=wire_bytes(after) - wire_bytes(before),
        hub_connections=conns["hub"]["peak"],
        cdn_connections=conns["cdn"]["peak"],
        server_cpu_seconds=server_cpu,
        killed_at=killed_at,
    )


@dataclass(frozen=True)
class LinkCheck:
    scenario: str
    streams: int
    seconds: float
    mb_s: float
    server_cpu_seconds: float


def link_check(scenario: Scenario, repo: Repo, hub: Hub, work: Path) -> LinkCheck | None:
    """What the fake Hub delivers on this link on this machine now: LINK_CHECK_STREAMS curl
    Range GETs of the one file in parallel, to /dev/null (no tool overhead, no disk)."""
    curl = shutil.which("curl")
    if curl is None or len(repo.files) != 1:
        return None
    ((name, data),) = repo.files.items()
    step = -(-data.size // LINK_CHECK_STREAMS)
    ranges = [f"{i * step}-{min(data.size, (i + 1) * step) - 1}" for i in range(LINK_CHECK_STREAMS)]
    url = f"{hub.url}/{repo.repo_id}/resolve/main/{name}"
    script = 'u=$1; shift; for r in "$@"; do curl -sSfL -r "$r" -o /dev/null "$u" & done; wait'
    work.mkdir(parents=True, exist_ok=True)
    wait_idle(hub)
    before, cpu = hub.summary(reset_peak=True), process_cpu_seconds(hub.pid)
    result, _ = measure(["sh", "-c", script, "sh", url, *ranges], clean_env(work / "home"), work)
    sent = wire_bytes(hub.summary()) - wire_bytes(before)
    if sent < data.size:
        raise BenchError(f"link check: the fake Hub sent {sent} of {data.size} bytes")
    cpu = process_cpu_seconds(hub.pid) - cpu
    shutil.rmtree(work)
    mb_s = data.size / MB / result.seconds
    log(f"{scenario.key} link check: {LINK_CHECK_STREAMS} curl ranges, {mb_s:.1f} MB/s, "
        f"fake Hub CPU {cpu:.1f} s")  # fmt: skip
    return LinkCheck(scenario.key, LINK_CHECK_STREAMS, result.seconds, mb_s, cpu)


def run_scenario(
    scenario: Scenario, repo: Repo, chosen: Sequence[Tool], runs: int, workspace: Path
) -> tuple[list[Row], LinkCheck | None]:
    rows = []
    check = None
    link = scenario.link
    wan = ["--aggregate-rate", str(link.aggregate), "--latency", str(link.latency)]
    wan += ["--connect-latency", str(link.latency)]
    files = {repo.repo_id: {name: f.path for name, f in repo.files.items()}}
    with fake_hub(files, link.per_connection, workspace / "hub", wan) as hub:
        if scenario.link_check:
            check = link_check(scenario, repo, hub, workspace / "link-check")
        for tool in chosen:
            row = Row(scenario.key, scenario.title, repo.nbytes, link, tool.key, tool.label,
                      tool.settings, missing=tool.missing)  # fmt: skip
            rows.append(row)
            if row.missing:
                log(f"{scenario.key} {tool.label}: {row.missing}")
                continue
            for i in range(runs):
                try:
                    run = run_once(scenario, tool, repo, hub, workspace / "run")
                except BenchError as exc:
                    row.error = " ".join(str(exc).split())[:300]
                    log(f"{scenario.key} {tool.label} run {i + 1}: FAILED: {exc}")
                    break
                row.runs.append(run)
                log(
                    f"{scenario.key} {tool.label} run {i + 1}/{runs}: {run.seconds:.2f} s, "
                    f"{repo.nbytes / MB / run.seconds:.1f} MB/s, conns "
                    f"{run.hub_connections}/{run.cdn_connections}, wire "
                    f"{run.wire_bytes / repo.nbytes:.3f}, CPU {run.cpu_seconds:.1f} s, "
                    f"RSS {run.rss_kib / KiB:.0f} MiB"
                    + (f", killed at {run.killed_at:.0%}" if run.killed_at is not None else "")
                )
    shutil.rmtree(workspace / "hub", ignore_errors=True)
    return rows, check


def help_times(hfpull: Tool, work: Path) -> list[float]:
    """`hfpull --help` wall time, HELP_RUNS times (the first one warms the page cache)."""
    if hfpull.executable is None:
        return []
    work.mkdir(parents=True, exist_ok=True)
    env = clean_env(work / "home")
    measure([hfpull.executable, "--help"], env, work)
    return [measure([hfpull.executable, "--help"], env, work)[0].seconds for _ in range(HELP_RUNS)]


def run_serve(quick: bool) -> str:
    """S6: bench_serve.py as it is (olah beside hfpull when its venv exists)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_serve.py")]
    cmd += ["--quick"] if quick else []
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return f"bench_serve.py FAILED (exit {proc.returncode}):\n\n```\n{proc.stderr[-2000:]}\n```"
    return proc.stdout


# -- report ----------------------------------------------------------------------------------


def _first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.splitlines()[0].strip() if out else "?"


def machine_facts(found: dict[str, Tool]) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):  # no /proc: not Linux
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    aria = found["aria2c"].executable
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem / GiB, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "hfpull": version("hfpull"),
        "huggingface_hub": version("huggingface_hub"),
        "aria2c": _first_line([aria, "--version"]) if aria else "not installed",
        "curl": _first_line(["curl", "--version"]).split(" (")[0],
        "load_before": os.getloadavg(),
    }


def render(
    facts: dict[str, Any], sizes: Sizes, runs: int, rows: list[Row], checks: list[LinkCheck],
    help_s: list[float], s6: str | None,
) -> str:  # fmt: skip
    before, after = facts["load_before"], facts["load_after"]
    lines = [
        f"Machine: {facts['cores']} cores ({facts['cpu']}), {facts['ram_gib']} GiB RAM, "
        f"{facts['os']}, Python {facts['python']}; hfpull {facts['hfpull']}, huggingface_hub "
        f"{facts['huggingface_hub']}, {facts['aria2c']}, {facts['curl']}",
        f"Load average (1 min) {before[0]:.2f} at the start, {after[0]:.2f} at the end.",
        f"Sizes: {sizes.name}: {sizes.describe()} ({sizes.why}). {runs} run(s) per tool, "
        "median shown; each into a fresh empty target, verified by SHA-256.",
        "",
        "Links (the fake Hub's WAN model): "
        + "; ".join(f"{s.key}: {s.link.describe()}" for s in SCENARIOS),
        "",
        render_table(rows),
        "",
        "Targets (issue 9):",
        "",
        render_targets(targets(rows, help_s)),
        "",
        "Notes:",
        "",
        "- wall s: spawn to exit, start-up included (S5: both invocations). MB/s: 10^6 bytes/s "
        "of repo data. conns hub/cdn: most connections open at once on each fake-Hub listener "
        "(LFS bodies come from the CDN one). of link limit: MB/s ÷ min(aggregate cap, cdn conns "
        "× per-connection cap). CPU s/GB: user+system of the tool and its children (wait4), "
        "median. peak RSS: the largest ru_maxrss over the runs. wire ÷ size: 2xx body bytes the "
        "fake Hub sent ÷ repo bytes (median). hfpull ÷ tool: hfpull's MB/s ÷ the tool's.",
        "- aria2c: the time includes one listing request (curl) as hfd.sh makes; the input "
        "file is written before the clock starts. curl runs in single-file scenarios only; in "
        "S4 curl + sha256sum adds the verification hfpull always does; curl + fsync the "
        "durability (hfpull fsyncs every blob before it renames it into place; curl leaves "
        "the file in the page cache for the kernel to write after it exits).",
        "- The fake Hub runs in Python on the same 2 cores as the tools: see its CPU column "
        "when a tool seems capped below the link.",
    ]
    links = {s.key: s.link for s in SCENARIOS}
    for c in checks:
        cap = links[c.scenario].aggregate
        lines.append(
            f"- Link check ({c.scenario}'s link, before the tools): {c.streams} curl Range GETs "
            f"in parallel to /dev/null drew {c.mb_s:.0f} MB/s from the fake Hub "
            f"({c.mb_s * MB / cap:.0%} of the {cap / MB:g} MB/s cap), the fake Hub using "
            f"{c.server_cpu_seconds:.1f} s of CPU in {c.seconds:.1f} s: what this machine's "
            "fake Hub can deliver on that link right now."
        )
    resume = render_resume(rows)
    if resume:
        lines += ["", "S5, where the kill landed (bytes the fake Hub had sent):", "", resume]
    lines += ["", "S6 (the mirror):", ""]
    lines.append(
        s6
        if s6 is not None
        else "not run here (--serve runs `benchmarks/bench_serve.py`); its latest table is in "
        "docs/mirror.md (Performance)."
    )
    return "\n".join(lines) + "\n"


def log(message: str) -> None:
    print(f"[suite] {message}", file=sys.stderr, flush=True)


# -- main ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    sizes: Sizes
    runs: int
    scenarios: tuple[Scenario, ...]
    tools: tuple[str, ...]
    serve: bool
    quick: bool
    out: Path | None
    json_out: Path | None


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run: under 2 min")
    parser.add_argument("--sizes", choices=("default", "issue"), help="default: see the report")
    parser.add_argument("--runs", type=int, help="runs per tool and scenario (default 3; quick 1)")
    parser.add_argument("--scenarios", help="comma-separated subset of S1,S2,S3,S4,S5")
    parser.add_argument("--tools", help=f"comma-separated subset of {','.join(TOOL_KEYS)}")
    parser.add_argument("--serve", action="store_true", help="also run bench_serve.py (S6)")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument("--json", type=Path, dest="json_out", help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick and args.sizes:
        parser.error("--quick and --sizes are exclusive")
    sizes = SIZES["quick" if args.quick else args.sizes or "default"]
    runs = args.runs if args.runs is not None else 1 if args.quick else 3
    if runs < 1:
        parser.error("--runs must be at least 1")
    keys = {s.key for s in SCENARIOS}
    picked = args.scenarios.upper().split(",") if args.scenarios else sorted(keys)
    if not set(picked) <= keys:
        parser.error(f"--scenarios: choose from {sorted(keys)}")
    names = args.tools.split(",") if args.tools else list(TOOL_KEYS)
    if not set(names) <= set(TOOL_KEYS):
        parser.error(f"--tools: choose from {list(TOOL_KEYS)}")
    if "curl" in names:
        names += ["curl+sha256sum", "curl+fsync"]
    scenarios = tuple(s for s in SCENARIOS if s.key in picked)
    return Config(sizes, runs, scenarios, tuple(names), args.serve, args.quick, args.out,
                  args.json_out)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    found = tools()
    facts = machine_facts(found)
    rows: list[Row] = []
    checks: list[LinkCheck] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hfpull-suite-") as tmp:
        workspace = Path(tmp)
        data = Data(workspace / "data")
        data.root.mkdir()
        for scenario in cfg.scenarios:
            repo = scenario.make(data, cfg.sizes)
            chosen = [found[k] for k in scenario.tools if k in cfg.tools]
            log(f"{scenario.key}: {len(repo.files)} files, {size(repo.nbytes)}; "
                f"{scenario.link.describe()}")  # fmt: skip
            found_rows, check = run_scenario(scenario, repo, chosen, cfg.runs, workspace)
            rows += found_rows
            checks += [check] if check is not None else []
        help_s = help_times(found["hfpull"], workspace / "help")
    s6 = run_serve(cfg.quick) if cfg.serve else None
    facts["load_after"] = os.getloadavg()
    facts["seconds"] = round(time.monotonic() - started, 1)
    report = render(facts, cfg.sizes, cfg.runs, rows, checks, help_s, s6)
    print(report, end="")
    if cfg.out is not None:
        cfg.out.write_text(report)
    if cfg.json_out is not None:
        payload = as_json(facts, rows, targets(rows, help_s), help_s)
        payload["sizes"] = {"name": cfg.sizes.name, "why": cfg.sizes.why}
        payload["runs"] = cfg.runs
        payload["link_checks"] = [asdict(c) for c in checks]
        cfg.json_out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    log(f"done in {facts['seconds']:.0f} s")
    failed = [r for r in rows if r.tool == HFPULL and r.error]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
