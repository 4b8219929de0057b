"""Rich rendering of engine events on stderr: total bytes, rate, ETA, files, one line per
active file, and a visible retrying/waiting state. The only module that imports rich.progress."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from hfpull.events import ProgressEvent

MAX_FILE_LINES = 8


class RichProgress:
    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(bar_width=30),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            refresh_per_second=5,
        )
        self._total: TaskID | None = None
        self._files: dict[str, TaskID] = {}
        self._done = 0
        self._count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            handler = getattr(self, f"_on_{event.kind}", None)
            if handler is not None:
                handler(event)

    def _on_plan(self, event: ProgressEvent) -> None:
        self._count = event.nbytes
        self._total = self.progress.add_task(
            self._total_label(), total=event.size or None, status=""
        )

    def _on_start(self, event: ProgressEvent) -> None:
        visible = len(self._files) < MAX_FILE_LINES
        task = self.progress.add_task(
            "  " + _short(event.path),
            total=event.size,
            completed=event.nbytes,
            status="",
            visible=visible,
        )
        self._files[event.path] = task

    def _on_advance(self, event: ProgressEvent) -> None:
        task = self._files.get(event.path)
        if task is not None:
            self.progress.update(task, advance=event.nbytes, status="")
        if self._total is not None:
            self.progress.update(self._total, advance=event.nbytes, status="")

    def _on_retry(self, event: ProgressEvent) -> None:
        task = self._files.get(event.path)
        if task is not None:
            self.progress.update(task, status=f"[yellow]retrying: {event.message}")

    def _on_wait(self, event: ProgressEvent) -> None:
        if self._total is not None:
            self.progress.update(self._total, status=f"[yellow]waiting: {event.message}")

    def _on_done(self, event: ProgressEvent) -> None:
        task = self._files.pop(event.path, None)
        if task is not None:
            self.progress.remove_task(task)
            hidden = [
                t for t in self._files.values() if not self.progress.tasks[self._index(t)].visible
            ]
            if hidden:
                self.progress.update(hidden[0], visible=True)
        self._done += 1
        if self._total is not None:
            self.progress.update(self._total, description=self._total_label())

    def _on_fail(self, event: ProgressEvent) -> None:
        task = self._files.pop(event.path, None)
        if task is not None:
            self.progress.remove_task(task)

    def _index(self, task: TaskID) -> int:
        return next(i for i, t in enumerate(self.progress.tasks) if t.id == task)

    def _total_label(self) -> str:
        return f"files {self._done}/{self._count}"


def _short(path: str, width: int = 40) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]
