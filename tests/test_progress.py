"""The progress display shows totals, active files, and retrying / waiting states."""

from __future__ import annotations

import io

from rich.console import Console

from hfpull.cli.progress import RichProgress
from hfpull.events import ProgressEvent


def render(events: list[ProgressEvent]) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    with RichProgress(console) as progress:
        for event in events:
            progress(event)
        progress.progress.refresh()
    return out.getvalue()


def test_retrying_and_waiting_states_are_visible() -> None:
    screen = render(
        [
            ProgressEvent("plan", size=3000, nbytes=2),
            ProgressEvent("start", "model.safetensors", size=2000),
            ProgressEvent("advance", "model.safetensors", nbytes=500),
            ProgressEvent("retry", "model.safetensors", message="cdn:443: stalled; retry in 2s"),
            ProgressEvent("wait", "config.json", message="another hfpull process is fetching it"),
        ]
    )
    assert "files 0/2" in screen and "model.safetensors" in screen
    assert "retrying: cdn:443: stalled; retry in 2s" in screen
    assert "waiting: another hfpull process is fetching it" in screen


def test_finished_files_are_counted() -> None:
    screen = render(
        [
            ProgressEvent("plan", size=10, nbytes=1),
            ProgressEvent("start", "a.bin", size=10),
            ProgressEvent("advance", "a.bin", nbytes=10),
            ProgressEvent("done", "a.bin", size=10, message="downloaded"),
        ]
    )
    assert "files 1/1" in screen
