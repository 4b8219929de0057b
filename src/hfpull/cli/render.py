"""Plain renderings of results: the get report (JSON on stdout, the end-of-get summary on
stderr), the plan, human sizes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hfpull.models import FileStatus, GetResult, Plan

if TYPE_CHECKING:
    from hfpull.pull import RunTally


def result_json(result: GetResult) -> dict[str, Any]:
    snap = result.snapshot
    return {
        "repo": snap.repo.repo_id,
        "type": snap.repo.repo_type,
        "revision": snap.revision,
        "commit": snap.commit,
        "path": result.path,
        "files": [
            {
                "path": f.path,
                "size": f.size,
                "hash": f.hash,
                "lfs": f.lfs,
                "status": f.status,
                "source": f.source,
            }
            for f in result.files
        ],
        "bytes_downloaded": result.bytes_downloaded,
        "seconds": round(result.seconds, 3),
        "bytes_resumed": result.bytes_resumed,
        "connections": result.connections,
        "sources": dict(result.sources),
    }


def summary_lines(result: GetResult) -> list[str]:
    """The end-of-get report for stderr: what was fetched, how fast, from where."""
    repo = result.snapshot.repo.repo_id
    fetched = sum(1 for f in result.files if f.status == "downloaded")
    present = sum(1 for f in result.files if f.status == "present")
    if not fetched:
        return [f"hfpull: {repo}: {_count(present)} already present, nothing fetched"]
    already = f" ({present} already present)" if present else ""
    line = (
        f"hfpull: {repo}: fetched {_count(fetched)}{already}: "
        f"{_moved(result.bytes_downloaded, result.seconds)}, "
        f"{human(result.bytes_resumed)} resumed, {_connections(result.connections)}"
    )
    sources = ", ".join(f"{host} {human(n)}" for host, n in result.sources)
    return [line, f"hfpull: sources: {sources}"]


def failure_summary_lines(repo: str, tally: RunTally) -> list[str]:
    """What a run that failed or was interrupted did, when it completed any file (the error
    line follows; a run that completed nothing is the error line alone)."""
    if not tally.files_fetched:
        return []
    failed = f", {tally.files_failed} failed" if tally.files_failed else ""
    return [
        f"hfpull: {repo}: fetched {_count(tally.files_fetched)}{failed} before stopping: "
        f"{_moved(tally.bytes_received, tally.seconds())}, "
        f"{human(tally.bytes_resumed)} resumed"
    ]


def _connections(count: int) -> str:
    """The most connections the run had open at once (the engine's budget peak)."""
    return f"{count} connection" if count == 1 else f"{count} connections"


def _count(files: int) -> str:
    return f"{files} file" if files == 1 else f"{files} files"


def _moved(nbytes: int, seconds: float) -> str:
    rate = nbytes / seconds if seconds > 0 else 0.0
    return f"{human(nbytes)} in {seconds:.2f} s ({human(int(rate))}/s)"


def plan_json(plan: Plan, free: int) -> dict[str, Any]:
    snap = plan.snapshot
    return {
        "repo": snap.repo.repo_id,
        "type": snap.repo.repo_type,
        "revision": snap.revision,
        "commit": snap.commit,
        "files": [
            {
                "path": p.file.path,
                "size": p.file.size,
                "lfs": p.file.is_lfs,
                "action": "fetch" if p.status is FileStatus.FETCH else "present",
                "partial_bytes": p.partial_bytes,
            }
            for p in plan.files
        ],
        "skipped": [f.path for f in plan.skipped],
        "total_bytes": plan.total_bytes,
        "bytes_to_fetch": plan.bytes_to_fetch,
        "free_disk_bytes": free,
    }


def print_plan(plan: Plan, free: int) -> None:
    from rich.console import Console  # only here: importing rich costs start-up time

    snap = plan.snapshot
    out = Console(soft_wrap=True, highlight=False)
    out.print(
        f"{snap.repo.repo_id} ({snap.repo.repo_type}) @ {snap.revision} = {snap.commit}",
        markup=False,
    )
    for p in plan.files:
        action = "fetch" if p.status is FileStatus.FETCH else "present"
        out.print(f"  {action:<8} {human(p.file.size):>10}  {p.file.path}", markup=False)
    out.print(
        f"{len(plan.files)} files selected ({len(plan.skipped)} skipped), "
        f"{human(plan.total_bytes)} in all; to fetch: {human(plan.bytes_to_fetch)}; "
        f"free disk: {human(free)}",
        markup=False,
    )


def human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"
