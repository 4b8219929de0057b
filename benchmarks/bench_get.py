#!/usr/bin/env python
"""Benchmark `hfpull get` (and huggingface_hub's snapshot_download) against the fake Hub.

The fake Hub runs in its own process (`python -m tests.fakehub`) so that serving does not share
a GIL with the downloader. Every download runs as a subprocess into a fresh empty cache; the
table reports its wall time, throughput and peak RSS (ru_maxrss of that child, via wait4), and
every download is verified byte for byte before its row counts.

    python benchmarks/bench_get.py [--quick] [--size-mib N] [--small-files N] [--cap-mib-s X]
                                   [--out FILE]

Prints machine facts and a Markdown table; exits 1 (loudly) if any download fails or differs.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

KiB = 1 << 10
MiB = 1 << 20
REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

BIG_REPO = "bench/big"
BIG_NAME = "model.safetensors"
SMALL_REPO = "bench/small"
SMALL_MIN, SMALL_MAX = 1 * KiB, 64 * KiB
SMALL_SEED = 1234  # file sizes are reproducible; contents are fresh random bytes
NON_LFS_THRESHOLD = 1 * MiB  # every small file stays a plain (non-LFS) git file

WRITE_CHUNK = 8 * MiB
HASH_CHUNK = 8 * MiB
DEFAULT_SEGMENT = 32 * MiB  # hfpull's default HFPULL_SEGMENT_SIZE
MIN_SEGMENTS = 32  # capped scenario: enough segments that 16 connections all get work
CONNECTIONS = (1, 4, 8, 16)
MAX_WORKERS = (8, 16)
HF_WORKERS = 8  # snapshot_download's default max_workers

DEFAULTS = {"size_mib": 1024, "small_files": 300}
QUICK = {"size_mib": 128, "small_files": 100}
DEFAULT_CAP_MIB_S = 25.0

SERVER_START_TIMEOUT = 120.0  # the server hashes every file before it listens
RUN_TIMEOUT = 900.0  # one download; a hang is killed and reported, never waited out

HF_SNAPSHOT = (
    "import sys\n"
    "from huggingface_hub import snapshot_download\n"
    f"print(snapshot_download(sys.argv[1], max_workers={HF_WORKERS}))\n"
)


class BenchError(Exception):
    """A download failed or produced wrong bytes: the benchmark must not report it."""


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    size: int  # bytes in the single big file
    small_files: int
    cap: int  # per-connection bytes/s in the capped scenarios
    out: Path | None


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        description="Benchmark hfpull get against a fake Hub in its own process."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: about 30 s in total")
    parser.add_argument("--size-mib", type=int, help="big file size (default 1024; quick 128)")
    parser.add_argument("--small-files", type=int, help="small file count (default 300; quick 100)")
    parser.add_argument(
        "--cap-mib-s",
        type=float,
        default=DEFAULT_CAP_MIB_S,
        help=f"per-connection cap of the capped scenarios (default {DEFAULT_CAP_MIB_S:g})",
    )
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    size_mib = args.size_mib if args.size_mib is not None else base["size_mib"]
    small = args.small_files if args.small_files is not None else base["small_files"]
    if size_mib < 1 or small < 1 or args.cap_mib_s <= 0:
        parser.error("--size-mib, --small-files and --cap-mib-s must be positive")
    return Config(size_mib * MiB, small, int(args.cap_mib_s * MiB), args.out)


# -- test data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BigFile:
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class SmallFiles:
    root: Path
    names: tuple[str, ...]  # repo paths, relative to root
    total: int


def make_big_file(path: Path, size: int) -> BigFile:
    """Random bytes written (and hashed) in chunks: the file is never held in memory."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(WRITE_CHUNK, left))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return BigFile(path, size, digest.hexdigest())


def make_small_files(root: Path, count: int) -> SmallFiles:
    rng = random.Random(SMALL_SEED)
    names, total = [], 0
    for i in range(count):
        name = f"part{i % 10}/file_{i:04d}.dat"  # .dat: not an LFS suffix
        size = rng.randint(SMALL_MIN, SMALL_MAX)
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(os.urandom(size))
        names.append(name)
        total += size
    return SmallFiles(root, tuple(names), total)


# -- verification ----------------------------------------------------------------------------


def snapshot_dir(cache: Path, repo: str) -> Path:
    snapshots = cache / f"models--{repo.replace('/', '--')}" / "snapshots"
    found = sorted(snapshots.iterdir()) if snapshots.is_dir() else []
    if len(found) != 1:
        raise BenchError(f"expected one snapshot under {snapshots}, found {len(found)}")
    return found[0]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_big(big: BigFile) -> Callable[[Path], None]:
    def check(snapshot: Path) -> None:
        files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*"))
        if files != [BIG_NAME]:
            raise BenchError(f"snapshot holds {files}, expected only {BIG_NAME}")
        got = snapshot / BIG_NAME
        if got.stat().st_size != big.size or sha256_of(got) != big.sha256:
            raise BenchError(f"{got} differs from the served file (size or sha256)")

    return check


def verify_small(small: SmallFiles) -> Callable[[Path], None]:
    def check(snapshot: Path) -> None:
        got = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
        if got != sorted(small.names):
            missing = sorted(set(small.names) - set(got))[:5]
            raise BenchError(
                f"snapshot holds {len(got)} files, expected {len(small.names)}; "
                f"missing e.g. {missing}"
            )
        for name in small.names:
            source, copy = small.root / name, snapshot / name
            if copy.stat().st_size != source.stat().st_size:
                raise BenchError(f"{name}: size differs from the served file")
            if not filecmp.cmp(source, copy, shallow=False):
                raise BenchError(f"{name}: content differs from the served file")

    return check


# -- processes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    seconds: float
    rss_kib: int  # peak RSS of the child itself (ru_maxrss is KiB on Linux)
    cpu_seconds: float  # user + system time of the child
    stdout: str


def measure(cmd: Sequence[str], env: dict[str, str], workdir: Path) -> Measured:
    """Run `cmd` to completion; wall time and the child's own rusage (wait4, not the parent's).

    Output goes to files, not pipes: a child blocked on a full pipe would never exit.
    """
    out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=workdir)
        killer = threading.Timer(RUN_TIMEOUT, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait
    if proc.returncode != 0:
        if seconds >= RUN_TIMEOUT:
            raise BenchError(f"{' '.join(cmd)}\nkilled after {RUN_TIMEOUT:.0f} s")
        tail = err_path.read_text(errors="replace")[-2000:]
        raise BenchError(f"{' '.join(cmd)}\nexited with {proc.returncode}:\n{tail}")
    return Measured(seconds, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, out_path.read_text())


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU time of a running process, from /proc (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No real token, cache, endpoint or hfpull knob leaks in from the caller's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFPULL_"))}
    env.update(
        HF_HOME=str(home),
        HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_XET="1",
    )
    env.update(extra)
    return env


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@contextlib.contextmanager
def fake_hub(repo: str, files: dict[str, Path], cap: int, workdir: Path) -> Iterator[Server]:
    """`python -m tests.fakehub` in its own process, stopped (SIGTERM) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / "url.txt"
    cmd = [PYTHON, "-m", "tests.fakehub", "--repo", repo, "--throttle", str(cap)]
    cmd += ["--lfs-threshold", str(NON_LFS_THRESHOLD), "--port-file", str(port_file)]
    for name, path in files.items():
        cmd += ["--file", f"{name}={path}"]
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log, env=clean_env(workdir)
        )
    try:
        url = _wait_for_url(proc, port_file, log_path)
        yield Server(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_url(proc: subprocess.Popen[bytes], port_file: Path, log_path: Path) -> str:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not port_file.exists():
        if proc.poll() is not None:
            log = log_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"fake hub exited with {proc.returncode}:\n{log}")
        if time.monotonic() > deadline:
            raise BenchError("fake hub did not start in time")
        time.sleep(0.05)
    return port_file.read_text().strip()


# -- scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    tool: str  # "hfpull" or "huggingface_hub"
    settings: str
    flags: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    repo: str
    files: dict[str, Path]
    nbytes: int
    cap: int
    jobs: tuple[Job, ...]
    verify: Callable[[Path], None]


@dataclass(frozen=True)
class Row:
    scenario: str
    tool: str
    settings: str
    seconds: float
    nbytes: int
    rss_kib: int
    cpu_seconds: float
    server_cpu_seconds: float

    @property
    def mib_s(self) -> float:
        return self.nbytes / MiB / self.seconds


def segment_size(size: int) -> int:
    """A segment size giving at least MIN_SEGMENTS segments (hfpull's default when it does)."""
    return max(MiB, min(DEFAULT_SEGMENT, size // MIN_SEGMENTS // MiB * MiB))


def mib(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= 10 * MiB else f"{n / MiB:.1f} MiB"


HF_JOB = Job("huggingface_hub", f"snapshot_download, {HF_WORKERS} files at once, 1 stream/file")


def connection_jobs(size: int) -> tuple[Job, ...]:
    """hfpull --connections N; segments shrink for small files so 16 connections all get work."""
    segment = segment_size(size)
    env: tuple[tuple[str, str], ...] = ()
    note = ""
    if segment != DEFAULT_SEGMENT:
        env = (("HFPULL_SEGMENT_SIZE", str(segment)),)
        note = f", HFPULL_SEGMENT_SIZE={segment // MiB} MiB"
    return tuple(
        Job("hfpull", f"--connections {n}{note}", ("--connections", str(n)), env)
        for n in CONNECTIONS
    )


def worker_jobs() -> tuple[Job, ...]:
    return tuple(
        Job("hfpull", f"--max-workers {n}", ("--max-workers", str(n))) for n in MAX_WORKERS
    )


def scenarios(cfg: Config, big: BigFile, small: SmallFiles) -> list[Scenario]:
    capped = f"cap {cfg.cap / MiB:g} MiB/s per connection"
    big_desc = f"1 LFS file of {mib(big.size)}"
    small_desc = f"{len(small.names)} small files ({mib(small.total)})"

    def on_big(name: str, cap: int, jobs: tuple[Job, ...]) -> Scenario:
        files = {BIG_NAME: big.path}
        return Scenario(name, BIG_REPO, files, big.size, cap, jobs, verify_big(big))

    def on_small(name: str, cap: int, jobs: tuple[Job, ...]) -> Scenario:
        files = {n: small.root / n for n in small.names}
        return Scenario(name, SMALL_REPO, files, small.total, cap, jobs, verify_small(small))

    return [
        on_big(f"1. {big_desc}, no cap", 0, (Job("hfpull", "defaults (adaptive connections)"),)),
        on_big(f"2. {big_desc}, {capped}", cfg.cap, (*connection_jobs(big.size), HF_JOB)),
        on_small(f"3. {small_desc}, no cap", 0, (*worker_jobs(), HF_JOB)),
        on_small(f"4. {small_desc}, {capped}", cfg.cap, (*worker_jobs(), HF_JOB)),
    ]


def command(job: Job, repo: str, url: str, cache: Path) -> tuple[list[str], dict[str, str]]:
    if job.tool == "hfpull":
        cmd = [PYTHON, "-m", "hfpull", "get", repo, "--cache-dir", str(cache), "--endpoint", url]
        return [*cmd, *job.flags, "--json", "--quiet"], dict(job.env)
    return [PYTHON, "-c", HF_SNAPSHOT, repo], {"HF_ENDPOINT": url, "HF_HUB_CACHE": str(cache)}


def run_job(scenario: Scenario, job: Job, server: Server, workdir: Path) -> Row:
    if workdir.exists():
        shutil.rmtree(workdir)
    cache = workdir / "cache"
    cache.mkdir(parents=True)  # fresh and empty for every run
    cmd, extra_env = command(job, scenario.repo, server.url, cache)
    # Flush dirty pages (test data, earlier runs) first: writeback throttling would otherwise
    # slow whichever run comes next (seen here: 1 GiB dirty doubled the next run's time).
    os.sync()
    server_cpu = process_cpu_seconds(server.pid)
    result = measure(cmd, clean_env(workdir / "hf-home", **extra_env), workdir)
    server_cpu = process_cpu_seconds(server.pid) - server_cpu
    if job.tool == "hfpull":
        reported = json.loads(result.stdout)["bytes_downloaded"]
        if reported != scenario.nbytes:
            raise BenchError(f"hfpull reported {reported} bytes, the repo has {scenario.nbytes}")
    scenario.verify(snapshot_dir(cache, scenario.repo))
    shutil.rmtree(workdir)  # a 1 GiB copy per run adds up
    return Row(
        scenario.name,
        job.tool,
        job.settings,
        result.seconds,
        scenario.nbytes,
        result.rss_kib,
        result.cpu_seconds,
        server_cpu,
    )


def run_scenario(scenario: Scenario, workspace: Path) -> list[Row]:
    rows = []
    with fake_hub(scenario.repo, scenario.files, scenario.cap, workspace / "server") as server:
        for job in scenario.jobs:
            row = run_job(scenario, job, server, workspace / "run")
            log(
                f"{scenario.name} | {job.tool} {job.settings}: {row.seconds:.2f} s, "
                f"{row.mib_s:.1f} MiB/s, client CPU {row.cpu_seconds:.1f} s, "
                f"server CPU {row.server_cpu_seconds:.1f} s"
            )
            rows.append(row)
    shutil.rmtree(workspace / "server")
    return rows


# -- report ----------------------------------------------------------------------------------


def machine_facts() -> str:
    return (
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.release()}; "
        f"hfpull {version('hfpull')}, huggingface_hub {version('huggingface_hub')}"
    )


def render_table(rows: Sequence[Row]) -> str:
    lines = [
        "| scenario | tool | settings | seconds | MiB/s | peak RSS MiB |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.tool} | {r.settings} | {r.seconds:.2f} | {r.mib_s:.1f} "
            f"| {r.rss_kib / KiB:.0f} |"
        )
    return "\n".join(lines)


def render_cpu(rows: Sequence[Row]) -> str:
    """Where the CPU went: on a 2-core machine client and server compete for it."""
    lines = [
        "| scenario | tool | settings | client CPU s | server CPU s | (client+server) / wall |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        share = (r.cpu_seconds + r.server_cpu_seconds) / r.seconds
        lines.append(
            f"| {r.scenario} | {r.tool} | {r.settings} | {r.cpu_seconds:.1f} "
            f"| {r.server_cpu_seconds:.1f} | {share:.2f} cores |"
        )
    return "\n".join(lines)


def render(rows: Sequence[Row]) -> str:
    return (
        f"{machine_facts()}\n\n{render_table(rows)}\n\n"
        f"CPU time (client = the downloading process, server = the fake hub process):\n\n"
        f"{render_cpu(rows)}\n"
    )


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- main ------------------------------------------------------------------------------------


def run(cfg: Config) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="hfpull-bench-") as tmp:
        workspace = Path(tmp)
        log(f"generating {mib(cfg.size)} big file and {cfg.small_files} small files in {tmp}")
        big = make_big_file(workspace / "big.bin", cfg.size)
        small = make_small_files(workspace / "small", cfg.small_files)
        rows: list[Row] = []
        for scenario in scenarios(cfg, big, small):
            rows += run_scenario(scenario, workspace)
        return rows


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        rows = run(cfg)
    except BenchError as exc:
        print(f"bench_get: FAILED: {exc}", file=sys.stderr)
        return 1
    report = render(rows)
    print(report, end="")
    if cfg.out is not None:
        cfg.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
