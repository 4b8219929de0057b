"""What bench_suite.py measured, and how it is reported: the table, the targets, the JSON.

Units: MB/s is 10^6 bytes per second (the issue states its links in MB/s); sizes are MiB/GiB;
peak RSS is MiB, compared with the issue's 150 MB (10^6 bytes) target in bytes.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MiB = 1 << 20
MB = 10**6
GB = 10**9

HFPULL = "hfpull"
# the targets
LINK_SHARE = 0.90  # S1, S2: of the link
HF_FACTOR_S1 = 6.0
HF_FACTOR_S3 = 3.0
CURL_SHARE_S4 = 0.8
RESUME_WIRE = 1.02  # S5: bytes on the wire / file size
RSS_LIMIT = 150 * MB
HELP_LIMIT = 0.150  # seconds


@dataclass(frozen=True)
class Link:
    """The WAN model of one scenario (tests/fakehub/wan.py); 0 means no cap."""

    per_connection: int  # bytes/s
    aggregate: int  # bytes/s
    latency: float  # seconds per request (and per new connection)

    @property
    def capped(self) -> bool:
        return bool(self.per_connection or self.aggregate)

    def limit(self, connections: int) -> float | None:
        """min(aggregate, connections x per-connection): the best these connections can do."""
        caps = [float(c) for c in (self.aggregate,) if c]
        if self.per_connection and connections:
            caps.append(float(connections * self.per_connection))
        return min(caps) if caps else None

    def describe(self) -> str:
        parts = []
        if self.per_connection:
            parts.append(f"{self.per_connection / MB:g} MB/s per connection")
        if self.aggregate:
            parts.append(f"{self.aggregate / MB:g} MB/s aggregate")
        if self.latency:
            parts.append(f"{self.latency * 1000:g} ms per request and per new connection")
        return ", ".join(parts) or "no caps, no added latency"


@dataclass
class Run:
    seconds: float  # wall, spawn to exit (S5: both invocations)
    cpu_seconds: float  # user + system of the tool and its children (wait4)
    rss_kib: int  # peak RSS (ru_maxrss)
    wire_bytes: int  # 2xx body bytes the fake Hub sent (both listeners)
    hub_connections: int  # most connections open at once, hub listener
    cdn_connections: int  # the same, CDN listener (LFS bodies)
    server_cpu_seconds: float  # the fake Hub process meanwhile
    killed_at: float | None = None  # S5: share of the file sent when SIGKILL went out


@dataclass
class Row:
    scenario: str  # "S1"
    title: str
    nbytes: int  # repo bytes
    link: Link
    tool: str  # "hfpull", "hf", "aria2c", "curl", "curl+sha256sum", "curl+fsync"
    label: str  # as printed
    settings: str
    runs: list[Run] = field(default_factory=list)
    error: str | None = None  # a run failed or gave wrong bytes: the row does not count
    missing: str | None = None  # the tool is not installed

    @property
    def ok(self) -> bool:
        return bool(self.runs) and self.error is None and self.missing is None

    @property
    def median_run(self) -> Run:
        ordered = sorted(self.runs, key=lambda r: r.seconds)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def mb_s(self) -> float:
        return self.nbytes / MB / self.seconds

    @property
    def cpu_per_gb(self) -> float:
        return statistics.median(r.cpu_seconds for r in self.runs) / (self.nbytes / GB)

    @property
    def peak_rss_bytes(self) -> int:
        return max(r.rss_kib for r in self.runs) * 1024

    @property
    def wire_ratio(self) -> float:
        return statistics.median(r.wire_bytes for r in self.runs) / self.nbytes

    @property
    def link_limit(self) -> float | None:
        return self.link.limit(self.median_run.cdn_connections)


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool | None  # None: not measured


# -- targets ---------------------------------------------------------------------------------


def _find(rows: Sequence[Row], scenario: str, tool: str) -> Row | None:
    for row in rows:
        if row.scenario == scenario and row.tool == tool and row.ok:
            return row
    return None


def _link_target(rows: Sequence[Row], scenario: str) -> Target:
    name = f"{scenario} ≥ {LINK_SHARE:.0%} of the link limit"
    row = _find(rows, scenario, HFPULL)
    if row is None or not row.link.aggregate:
        return Target(name, "not measured", None)
    share = row.mb_s * MB / row.link.aggregate
    conns = row.median_run.cdn_connections
    own = row.link_limit
    measured = (
        f"{row.mb_s:.0f} MB/s = {share:.0%} of the {row.link.aggregate / MB:g} MB/s link "
        f"({conns} connections: {row.mb_s * MB / own:.0%} of their "
        f"{own / MB:.0f} MB/s limit)"
        if own
        else f"{row.mb_s:.0f} MB/s = {share:.0%}"
    )
    return Target(name, measured, share >= LINK_SHARE)


def _speed_target(
    rows: Sequence[Row], scenario: str, peer: str, factor: float, name: str
) -> Target:
    ours, theirs = _find(rows, scenario, HFPULL), _find(rows, scenario, peer)
    if ours is None or theirs is None:
        return Target(name, "not measured", None)
    ratio = theirs.seconds / ours.seconds
    measured = f"{ratio:.2f}× (hfpull {ours.seconds:.2f} s, {theirs.label} {theirs.seconds:.2f} s)"
    return Target(name, measured, ratio >= factor)


def targets(rows: Sequence[Row], help_seconds: Sequence[float]) -> list[Target]:
    out = [
        _link_target(rows, "S1"),
        _speed_target(rows, "S1", "aria2c", 1.0, "S1 at least as fast as aria2c -x16 -s16"),
        _speed_target(rows, "S1", "hf", HF_FACTOR_S1, f"S1 ≥ {HF_FACTOR_S1:g}× hf download"),
        _link_target(rows, "S2"),
        _speed_target(rows, "S3", "hf", HF_FACTOR_S3, f"S3 ≥ {HF_FACTOR_S3:g}× hf download"),
        _speed_target(
            rows, "S4", "curl", CURL_SHARE_S4, f"S4 ≥ {CURL_SHARE_S4:g}× curl's throughput"
        ),
        _speed_target(
            rows,
            "S4",
            "curl+fsync",
            CURL_SHARE_S4,
            f"S4 ≥ {CURL_SHARE_S4:g}× curl + fsync (the same durability; a reference)",
        ),
    ]
    s5 = _find(rows, "S5", HFPULL)
    name = f"S5 ≤ {RESUME_WIRE:g} × the file on the wire"
    if s5 is None:
        out.append(Target(name, "not measured", None))
    else:
        out.append(Target(name, f"{s5.wire_ratio:.3f} × the file", s5.wire_ratio <= RESUME_WIRE))
    ours = [r for r in rows if r.tool == HFPULL and r.ok]
    name = f"peak RSS ≤ {RSS_LIMIT / MB:.0f} MB in every scenario"
    if ours:
        worst = max(ours, key=lambda r: r.peak_rss_bytes)
        peak = worst.peak_rss_bytes
        measured = f"at most {peak / MiB:.0f} MiB ({peak / MB:.0f} MB), in {worst.scenario}"
        out.append(Target(name, measured, peak <= RSS_LIMIT))
    else:
        out.append(Target(name, "not measured", None))
    name = f"hfpull --help ≤ {HELP_LIMIT * 1000:.0f} ms"
    if help_seconds:
        median = statistics.median(help_seconds)
        measured = (
            f"{median * 1000:.0f} ms (median of {len(help_seconds)}; "
            f"{min(help_seconds) * 1000:.0f}–{max(help_seconds) * 1000:.0f})"
        )
        out.append(Target(name, measured, median <= HELP_LIMIT))
    else:
        out.append(Target(name, "not measured", None))
    out.append(Target("S6 as in the mirror issue", "bench_serve.py (see S6 below)", None))
    return out


# -- rendering -------------------------------------------------------------------------------

HEADER = (
    "scenario",
    "tool",
    "settings",
    "runs",
    "wall s",
    "range s",
    "MB/s",
    "conns hub/cdn",
    "of link limit",
    "CPU s/GB",
    "peak RSS MiB",
    "wire ÷ size",
    "fake Hub CPU s",
    "hfpull ÷ tool",
)


def _cells(row: Row, hfpull: Row | None) -> list[str]:
    head = [f"{row.scenario} {row.title}", row.label, row.settings]
    if row.missing:
        return [*head, "0", f"not run: {row.missing}", *[""] * (len(HEADER) - 5)]
    if not row.ok:
        return [*head, str(len(row.runs)), f"FAILED: {row.error}", *[""] * (len(HEADER) - 5)]
    m = row.median_run
    limit = row.link_limit
    times = [r.seconds for r in row.runs]
    ratio = "—" if row.tool == HFPULL or hfpull is None else f"{hfpull.mb_s / row.mb_s:.2f}"
    return [
        *head,
        str(len(row.runs)),
        f"{row.seconds:.2f}",
        f"{min(times):.2f}–{max(times):.2f}",
        f"{row.mb_s:.1f}",
        f"{m.hub_connections}/{m.cdn_connections}",
        f"{row.mb_s * MB / limit:.0%}" if limit else "—",
        f"{row.cpu_per_gb:.2f}",
        f"{row.peak_rss_bytes / MiB:.0f}",
        f"{row.wire_ratio:.3f}",
        f"{statistics.median(r.server_cpu_seconds for r in row.runs):.1f}",
        ratio,
    ]


def render_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|---|---|---|" + "---:|" * (len(HEADER) - 3)]
    for row in rows:
        hfpull = _find(rows, row.scenario, HFPULL)
        lines.append("| " + " | ".join(_cells(row, hfpull)) + " |")
    return "\n".join(lines)


def verdict(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "**not met**"


def render_targets(found: Sequence[Target]) -> str:
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t.name} | {t.measured} | {verdict(t.met)} |" for t in found]
    return "\n".join(lines)


def render_resume(rows: Sequence[Row]) -> str:
    """S5 per tool: where the kill landed and what the rerun cost."""
    lines = []
    for row in rows:
        if row.scenario != "S5" or not row.ok:
            continue
        shares = [r.killed_at for r in row.runs if r.killed_at is not None]
        wires = [r.wire_bytes / row.nbytes for r in row.runs]
        lines.append(
            f"- {row.label}: killed at {min(shares):.0%}–{max(shares):.0%} of the file; "
            f"wire ÷ size {min(wires):.3f}–{max(wires):.3f}"
        )
    return "\n".join(lines)


def as_json(
    facts: dict[str, Any], rows: Sequence[Row], found: Sequence[Target], help_s: Sequence[float]
) -> dict[str, Any]:
    return {
        "machine": facts,
        "rows": [
            {
                **asdict(row),
                "median_seconds": row.seconds if row.ok else None,
                "mb_s": row.mb_s if row.ok else None,
                "link_limit_bytes_s": row.link_limit if row.ok else None,
                "cpu_seconds_per_gb": row.cpu_per_gb if row.ok else None,
                "peak_rss_bytes": row.peak_rss_bytes if row.ok else None,
                "wire_ratio": row.wire_ratio if row.ok else None,
            }
            for row in rows
        ],
        "help_seconds": list(help_s),
        "targets": [asdict(t) for t in found],
    }
