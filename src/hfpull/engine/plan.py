"""Pure planning: snapshot + filters + what the target already holds -> what to fetch."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from huggingface_hub.utils import filter_repo_objects  # type: ignore[attr-defined]

from hfpull.errors import UsageError
from hfpull.models import FileStatus, Plan, PlannedFile, RemoteFile, Snapshot

LocalState = Callable[[RemoteFile], tuple[FileStatus, int]]  # -> status, bytes held in partials


def select(
    files: Sequence[RemoteFile], include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[RemoteFile]:
    """The files kept by --include/--exclude, with exactly `hf download`'s glob rules."""
    return list(
        filter_repo_objects(
            files,
            allow_patterns=list(include) or None,
            ignore_patterns=list(exclude) or None,
            key=lambda f: f.path,
        )
    )


def build_plan(
    snapshot: Snapshot,
    include: Sequence[str],
    exclude: Sequence[str],
    local_state: LocalState,
    only: Collection[str] | None = None,
) -> Plan:
    """``only``: exact paths (a lock file's selection) instead of globs."""
    if only is not None:
        selected = [f for f in snapshot.files if f.path in only]
    else:
        selected = select(snapshot.files, include, exclude)
    if not selected and snapshot.files:
        raise UsageError(
            f"no file of {snapshot.repo.repo_id}@{snapshot.commit[:12]} matches the filters",
            hint="check --include/--exclude (globs match the full path, e.g. '*.safetensors')",
        )
    chosen = {f.path for f in selected}
    planned = []
    for file in selected:
        status, held = local_state(file)
        planned.append(PlannedFile(file, status, held if status is FileStatus.FETCH else 0))
    skipped = tuple(f for f in snapshot.files if f.path not in chosen)
    return Plan(snapshot, tuple(planned), skipped)
