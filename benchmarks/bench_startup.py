#!/usr/bin/env python
"""Start-up time of the `hfpull` command: wall time of whole processes, median of N runs.

    python benchmarks/bench_startup.py [--runs N] [--out FILE]

Cases: the interpreter alone (the floor), `hfpull --help`, `hfpull --version`, and a no-op
`hfpull get` of a repo that is already complete in the cache, offline (HF_HUB_OFFLINE=1: no
request at all) and online against the fake Hub (one revision API call, then nothing to do).
Every case runs the installed `hfpull` console script (as a user types it) as a subprocess;
the table gives the median, min and max in milliseconds. The fake Hub runs in its own process.
hfpull's own modules are byte-compiled first, as `pip install` does: an editable install under
PYTHONDONTWRITEBYTECODE=1 would otherwise recompile them on every run (~30 ms here).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
REPO = "bench/startup"
SERVER_START_TIMEOUT = 60.0


def hfpull_command() -> list[str]:
    """The console script beside this interpreter (what `pip install` puts on PATH)."""
    script = Path(PYTHON).parent / "hfpull"
    return [str(script)] if script.exists() else [PYTHON, "-m", "hfpull"]


def compile_hfpull(env: dict[str, str]) -> None:
    """Byte-compile the hfpull package the command imports (where it is, like pip does)."""
    script = "import compileall, hfpull; compileall.compile_dir(hfpull.__path__[0], quiet=1)"
    subprocess.run([PYTHON, "-c", script], env=env, check=True, cwd=REPO_ROOT, timeout=120)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFPULL_"))}
    env.update(extra)
    return env


def time_runs(cmd: Sequence[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall seconds of ``runs`` runs (after one untimed warm-up); each must exit 0."""
    samples = []
    for attempt in range(runs + 1):
        started = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, timeout=60, cwd=REPO_ROOT)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]!r}")
        if attempt:
            samples.append(elapsed)
    return samples


@contextlib.contextmanager
def fake_hub(workdir: Path) -> Iterator[str]:
    """`python -m tests.fakehub` serving one small repo, stopped on exit."""
    (workdir / "config.json").write_bytes(b'{"model_type": "bench"}\n')
    (workdir / "model.safetensors").write_bytes(os.urandom(2 << 20))
    port_file = workdir / "url.txt"
    cmd = [PYTHON, "-m", "tests.fakehub", "--repo", REPO, "--port-file", str(port_file)]
    for name in ("config.json", "model.safetensors"):
        cmd += ["--file", f"{name}={workdir / name}"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the fake Hub did not start")
            time.sleep(0.05)
        yield port_file.read_text().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per case (10)")
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) here")
    args = parser.parse_args(argv)

    hfpull = hfpull_command()
    rows: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="hfpull-bench-startup-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        env = clean_env(HF_HOME=str(work / "hf-home"))
        compile_hfpull(env)
        rows.append(("python -c pass (floor)", time_runs([PYTHON, "-c", "pass"], env, args.runs)))
        rows.append(("hfpull --help", time_runs([*hfpull, "--help"], env, args.runs)))
        rows.append(("hfpull --version", time_runs([*hfpull, "--version"], env, args.runs)))
        with fake_hub(work) as url:
            online = dict(env, HF_ENDPOINT=url)
            get = [*hfpull, "get", REPO, "--cache-dir", str(cache), "--quiet"]
            subprocess.run(get, env=online, check=True, capture_output=True, timeout=120)
            rows.append(("hfpull get (complete repo, fake Hub)", time_runs(get, online, args.runs)))
        offline = dict(env, HF_HUB_OFFLINE="1")
        rows.append(("hfpull get (complete repo, offline)", time_runs(get, offline, args.runs)))

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}; "
        f"{args.runs} runs per case after one warm-up; command: {' '.join(hfpull)}",
        "",
        "| case | median ms | min ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    for name, samples in rows:
        ms = [s * 1000 for s in samples]
        lines.append(f"| {name} | {statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f} |")
    report = "\n".join(lines) + "\n"
    print(report, end="")
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
