"""The benchmark script runs end to end (--quick) and reports every scenario. No timing asserts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_get.py"
HEADER = ["scenario", "tool", "settings", "seconds", "MiB/s", "peak RSS MiB"]

# (scenario number, tool, start of the settings cell), in table order.
EXPECTED_ROWS = [
    ("1", "hfpull", "defaults"),
    ("2", "hfpull", "--connections 1"),
    ("2", "hfpull", "--connections 4"),
    ("2", "hfpull", "--connections 8"),
    ("2", "hfpull", "--connections 16"),
    ("2", "huggingface_hub", "snapshot_download"),
    ("3", "hfpull", "--max-workers 8"),
    ("3", "hfpull", "--max-workers 16"),
    ("3", "huggingface_hub", "snapshot_download"),
    ("4", "hfpull", "--max-workers 8"),
    ("4", "hfpull", "--max-workers 16"),
    ("4", "huggingface_hub", "snapshot_download"),
]


def first_table(report: str) -> list[list[str]]:
    """Cells of the first Markdown table in the report (header row included)."""
    rows: list[list[str]] = []
    for line in report.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    return [r for r in rows if not set("".join(r)) <= set("-:")]  # drop the |---| line


def run_bench(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<script>`` with no HF_/HFPULL_ settings from the caller; it must exit 0."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout,
        env={k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFPULL_"))},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_bench_get_quick(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    proc = run_bench(SCRIPT.name, "--quick", "--out", str(out))
    assert proc.stdout.startswith("Machine: ")

    table = first_table(proc.stdout)
    assert table[0] == HEADER
    body = table[1:]
    got = [(r[0].split(".")[0], r[1], r[2]) for r in body]
    assert len(got) == len(EXPECTED_ROWS), proc.stdout
    for (number, tool, settings), expected in zip(got, EXPECTED_ROWS):
        assert (number, tool) == expected[:2], proc.stdout
        assert settings.startswith(expected[2]), proc.stdout
    for row in body:
        assert all(float(cell) > 0 for cell in row[3:]), row  # numbers, not timing limits

    assert out.read_text() == proc.stdout


@pytest.mark.slow
def test_bench_offline_runs_and_reports_every_step(tmp_path: Path) -> None:
    out = tmp_path / "offline.md"
    result = run_bench("bench_offline.py", "--size-mib", "16", "--out", str(out))
    steps = [
        line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")
    ]
    assert steps[1:] == [
        f"{step} ({kind})" if step != "pack" else f"pack --compression {kind}"
        for kind in ("none", "gzip", "zstd")
        for step in ("pack", "unpack", "verify archive")
    ] + ["verify cached snapshot"]
    assert out.read_text().strip() == result.stdout.strip()


@pytest.mark.slow
def test_bench_serve_quick_reports_every_hfpull_row(tmp_path: Path) -> None:
    out = tmp_path / "serve.md"
    result = run_bench("bench_serve.py", "--quick", "--no-olah", "--out", str(out), timeout=900)
    rows = [line for line in result.stdout.splitlines() if line.startswith("| hfpull |")]
    scenarios = " ".join(rows)
    for expected in ("cold HEAD", "GET after HEAD", "cold miss, full body", "hit, 1 client",
                     "50 clients", "newcomer", "memory"):  # fmt: skip
        assert expected in scenarios, result.stdout
    assert "olah |" not in result.stdout.replace("hfpull / olah", "")
    assert out.read_text() == result.stdout
