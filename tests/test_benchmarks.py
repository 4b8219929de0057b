"""The benchmark script runs end to end (--quick) and reports every scenario. No timing asserts."""

from __future__ import annotations

import json
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


# -- bench_suite.py (issue 9) ------------------------------------------------------------------

SUITE_VERDICTS = {"met", "**not met**", "not measured"}
SUITE_TARGETS = [
    "S1 ≥ 90% of the link limit",
    "S1 at least as fast as aria2c -x16 -s16",
    "S1 ≥ 6× hf download",
    "S2 ≥ 90% of the link limit",
    "S3 ≥ 3× hf download",
    "S4 ≥ 0.8× curl's throughput",
    "S4 ≥ 0.8× curl + fsync (the same durability; a reference)",
    "S5 ≤ 1.02 × the file on the wire",
    "peak RSS ≤ 150 MB in every scenario",
    "hfpull --help ≤ 150 ms",
    "S6 as in the mirror issue",
]


def tables(report: str) -> list[list[list[str]]]:
    """Every Markdown table of the report, as cells (header row included, |---| dropped)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*report.splitlines(), ""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            found.append([r for r in current if not set("".join(r)) <= set("-:")])
            current = []
    return found


@pytest.mark.slow
def test_bench_suite_quick_reports_every_scenario_tool_and_target(tmp_path: Path) -> None:
    out, js = tmp_path / "suite.md", tmp_path / "suite.json"
    result = run_bench("bench_suite.py", "--quick", "--out", str(out), "--json", str(js))
    assert out.read_text() == result.stdout
    assert result.stdout.startswith("Machine: ")
    main, goals = tables(result.stdout)[:2]
    header, body = main[0], main[1:]
    assert header[:4] == ["scenario", "tool", "settings", "runs"]
    col = {name: i for i, name in enumerate(header)}
    rows = {(r[0].split()[0], r[1]): r for r in body}
    expected = {
        (s, tool)
        for s in ("S1", "S2", "S3", "S4", "S5")
        for tool in ("hfpull get", "hf download", "aria2c")
    }
    expected |= {("S1", "curl"), ("S5", "curl")}
    expected |= {("S4", "curl"), ("S4", "curl + sha256sum"), ("S4", "curl + fsync")}
    assert set(rows) == expected, result.stdout
    for (scenario, tool), row in rows.items():
        if tool == "aria2c" and row[col["wall s"]].startswith("not run: aria2c not installed"):
            continue  # the suite says so and runs the rest
        assert row[col["runs"]] == "1", row  # --quick: one run each
        assert not row[col["wall s"]].startswith("FAILED"), row
        for name in ("wall s", "MB/s", "CPU s/GB", "peak RSS MiB"):
            assert float(row[col[name]]) > 0, (name, row)
        # every body the tool needed went over the wire at least once
        assert float(row[col["wire ÷ size"]]) >= 0.999, row
    assert [g[0] for g in goals[1:]] == SUITE_TARGETS
    assert {g[2] for g in goals[1:]} <= SUITE_VERDICTS

    data = json.loads(js.read_text())
    assert len(data["rows"]) == len(body)
    assert len(data["help_seconds"]) == 10
    (resume,) = [r for r in data["rows"] if r["scenario"] == "S5" and r["tool"] == "hfpull"]
    for run in resume["runs"]:  # SIGKILLed once half the file had been sent, not before
        assert 0.5 <= run["killed_at"] < 1.0, run


def test_suite_verify_rejects_wrong_bytes_and_extra_files(tmp_path: Path) -> None:
    """A run only counts when the target holds exactly the served files, byte for byte."""
    from benchmarks.bench_get import BenchError
    from benchmarks.bench_suite import Data, Repo, tools, verify

    data = Data(tmp_path / "data")
    data.root.mkdir()
    repo = Repo("bench/x", {"a/b.bin": data.file("b", 4096), "c.json": data.file("c", 100)})
    target = tmp_path / "target"
    for name, f in repo.files.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(f.path.read_bytes())
    plain = tools()["curl"]
    verify(plain, repo, target)  # exact copy: accepted

    flipped = bytearray((target / "a/b.bin").read_bytes())
    flipped[1234] ^= 1
    (target / "a/b.bin").write_bytes(flipped)
    with pytest.raises(BenchError, match="wrong bytes"):
        verify(plain, repo, target)
    (target / "a/b.bin").write_bytes(repo.files["a/b.bin"].path.read_bytes())
    (target / "a/b.bin.aria2").write_bytes(b"")  # a control file left behind: not complete
    with pytest.raises(BenchError, match="extra"):
        verify(plain, repo, target)


def test_suite_targets_use_the_link_not_the_tools_own_connections() -> None:
    from benchmarks.suite_report import Link, Row, Run, targets

    wan = Link(20_000_000, 200_000_000, 0.04)
    assert wan.limit(8) == 160_000_000 and wan.limit(16) == 200_000_000
    assert Link(0, 0, 0.04).limit(8) is None

    def row(scenario: str, tool: str, seconds: float, conns: int, rss_mib: int = 50) -> Row:
        run = Run(seconds, 1.0, rss_mib * 1024, 10**9, 1, conns, 0.5)
        return Row(scenario, "", 10**9, wan, tool, tool, "", runs=[run])

    # 1 GB in 6.7 s = 149 MB/s: 93% of what 8 connections can do, 75% of the link
    found = {t.name: t for t in targets([row("S1", "hfpull", 6.7, 8),
                                         row("S1", "aria2c", 5.5, 16),
                                         row("S1", "hf", 50.0, 1)], [0.12] * 10)}  # fmt: skip
    assert found["S1 ≥ 90% of the link limit"].met is False
    assert "75% of the 200 MB/s link" in found["S1 ≥ 90% of the link limit"].measured
    assert "93% of their 160 MB/s limit" in found["S1 ≥ 90% of the link limit"].measured
    assert found["S1 at least as fast as aria2c -x16 -s16"].met is False
    assert found["S1 ≥ 6× hf download"].met is True  # 7.5×
    assert found["hfpull --help ≤ 150 ms"].met is True
    assert found["S2 ≥ 90% of the link limit"].met is None  # not measured, never "met"
    assert found["peak RSS ≤ 150 MB in every scenario"].met is True
    big = targets([row("S1", "hfpull", 5.0, 16, rss_mib=160)], [])
    assert {t.name: t.met for t in big}["peak RSS ≤ 150 MB in every scenario"] is False
