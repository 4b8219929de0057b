"""Throughput of hfpull pack / unpack / verify on a weights-like repo, per compression.

    python benchmarks/bench_offline.py [--size-mib 1024] [--out FILE]

The repo is fetched once from the fake Hub into a cache; then every command runs as its own
process (`python -m hfpull ...`), timed from spawn to exit, with peak RSS from os.wait4.
The data are float16 values drawn from a normal distribution, which compress like real model
weights (random bytes would not compress at all; zeros would compress absurdly well).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakehub import FakeHub  # noqa: E402

MiB = 1 << 20


def weights_like(path: Path, size: int) -> None:
    """float16 N(0, 0.02) values, like a transformer's weights, written in 32 MiB chunks."""
    try:
        import numpy as np
    except ImportError:  # fall back to incompressible bytes
        with open(path, "wb") as out:
            for _ in range(size // (32 * MiB)):
                out.write(os.urandom(32 * MiB))
        return
    rng = np.random.default_rng(0)
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(left, 32 * MiB)
            out.write(rng.normal(0, 0.02, n // 2).astype(np.float16).tobytes())
            left -= n


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run `python -m hfpull ARGS`; return (seconds, peak RSS MiB of that process, stdout)."""
    os.sync()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "hfpull", *args], env=env, cwd=ROOT, stdout=out, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if code != 0:
        raise SystemExit(f"hfpull {' '.join(args)} failed ({code}): {stderr}")
    return seconds, usage.ru_maxrss / 1024, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--out", type=Path)
    options = parser.parse_args()
    size = options.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="hfpull-bench-offline-"))
    rows: list[str] = []
    try:
        shards = [work / "shard-1.bin", work / "shard-2.bin"]
        for shard in shards:  # in a child: a forked child's peak RSS starts at ours
            code = "import sys; from benchmarks.bench_offline import weights_like as w; "
            code += f"from pathlib import Path; w(Path({str(shard)!r}), {size // 2})"
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        files: dict[str, bytes | Path] = {
            "model-00001-of-00002.safetensors": shards[0],
            "model-00002-of-00002.safetensors": shards[1],
            "config.json": b'{"model_type": "bench"}',
        }
        with FakeHub() as hub:
            hub.add_repo("bench/offline", files)
            cache = work / "cache"
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFPULL_"))}
            env.update(HF_ENDPOINT=hub.url, HF_HOME=str(work / "home"))
            run(["get", "bench/offline", "--cache-dir", str(cache), "--quiet"], env)
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # from here on nothing may use the network
        mib = size / MiB
        for kind in ("none", "gzip", "zstd"):
            archive = work / f"bench.{kind}"
            t, rss, _ = run(["pack", "bench/offline", "--offline", "-o", str(archive),
                             "--compression", kind, "--cache-dir", str(cache)], env)  # fmt: skip
            ratio = archive.stat().st_size / size
            rows.append(
                f"| pack --compression {kind} | {t:.2f} | {mib / t:.0f} | {ratio:.3f} | {rss:.0f} |"
            )
            fresh = work / f"cache-{kind}"
            t, rss, _ = run(["unpack", str(archive), "--cache-dir", str(fresh), "--quiet"], env)
            rows.append(f"| unpack ({kind}) | {t:.2f} | {mib / t:.0f} | | {rss:.0f} |")
            t, rss, _ = run(["verify", str(archive)], env)
            rows.append(f"| verify archive ({kind}) | {t:.2f} | {mib / t:.0f} | | {rss:.0f} |")
            shutil.rmtree(fresh)
            if kind != "none":
                archive.unlink()
        t, rss, _ = run(
            [
                "verify",
                "bench/offline",
                "--manifest",
                str(work / "bench.none"),
                "--cache-dir",
                str(cache),
            ],
            env,
        )
        rows.append(f"| verify cached snapshot | {t:.2f} | {mib / t:.0f} | | {rss:.0f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = "\n".join(
        [
            f"Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; "
            f"repo: 2 float16 shards, {options.size_mib} MiB in all",
            "",
            "| step | seconds | MiB/s | archive / repo | peak RSS MiB |",
            "|---|---:|---:|---:|---:|",
            *rows,
        ]
    )
    print(report)
    if options.out:
        options.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
