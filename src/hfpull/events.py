"""Progress events: what the engine reports to a UI (rich bars, JSON lines, a test)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    kind: str  # plan | start | advance | done | retry | wait | fail
    path: str = ""
    size: int = 0  # file size (start/done), total bytes to fetch (plan)
    nbytes: int = 0  # bytes just received (advance); files to fetch (plan)
    message: str = ""  # retry/wait/fail reason, one line, no secrets


ProgressCallback = Callable[[ProgressEvent], None]


def ignore(_event: ProgressEvent) -> None:
    return None
