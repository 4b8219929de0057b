"""Plain renderings of results for stdout: the get report, the plan, human sizes."""

from __future__ import annotations

from typing import Any

from hfpull.models import FileStatus, GetResult, Plan


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
    }


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
