"""Typer CLI: options -> Settings -> one core call -> render. The only place that maps
errors to exit codes and prints them."""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from . import __version__
from .api import Session
from .errors import ExitCode, HfpullError, Interrupted, UsageError
from .models import FileStatus, GetResult, Plan
from .settings import from_environment

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fast, resumable, verified downloads of Hugging Face repos.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
stderr = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        print(f"hfpull {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """hfpull: pull Hugging Face repos over slow or flaky links, verified byte for byte."""


@app.command()
def get(
    repo_id: Annotated[str, typer.Argument(help="Repo id, e.g. tencent/HunyuanOCR.")],
    repo_type: Annotated[
        str, typer.Option("--repo-type", help="model, dataset or space.")
    ] = "model",
    revision: Annotated[str, typer.Option("--revision", help="Branch, tag or commit.")] = "main",
    include: Annotated[
        list[str] | None,
        typer.Option("--include", help="Only files matching this glob (repeatable)."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="Skip files matching this glob (repeatable)."),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="HF cache folder (default: as huggingface_hub)."),
    ] = None,
    local_dir: Annotated[
        Path | None, typer.Option("--local-dir", help="Write plain files into this folder instead.")
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", help="Origin (default: $HF_ENDPOINT or huggingface.co)."),
    ] = None,
    mirror: Annotated[
        list[str] | None,
        typer.Option(
            "--mirror", help="Mirror tried before the origin (repeatable; $HFPULL_MIRRORS)."
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="HF token (default: $HF_TOKEN or the stored one).")
    ] = None,
    max_workers: Annotated[
        int, typer.Option("--max-workers", min=1, max=64, help="Files at once.")
    ] = 8,
    connections: Annotated[
        int, typer.Option("--connections", min=1, max=32, help="Range connections per large file.")
    ] = 8,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan; download nothing.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON report on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    progress: Annotated[
        bool, typer.Option("--progress", help="Show progress even when stderr is not a terminal.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Tracebacks on errors.")] = False,
) -> None:
    """Download a repo into the HF cache (or --local-dir); print the snapshot path."""
    if cache_dir is not None and local_dir is not None:
        _fail(UsageError("use either --cache-dir or --local-dir, not both"), debug)
    _install_sigterm()
    try:
        settings = from_environment(
            endpoint=endpoint,
            mirrors=tuple(mirror or ()),
            token=token,
            cache_dir=cache_dir,
            local_dir=local_dir,
            max_workers=max_workers,
            connections=connections,
        )
        show = progress or (not quiet and not json_out and not dry_run and stderr.is_terminal)
        from .progress import RichProgress

        renderer = RichProgress(stderr) if show else None
        session = Session(
            repo_id, repo_type=repo_type, revision=revision, settings=settings, progress=renderer
        )
        plan = session.plan(include or (), exclude or ())
        if dry_run:
            _print_plan(plan, session.free_disk(), json_out)
            return
        with renderer if renderer is not None else nullcontext():
            result = session.run(plan)
    except KeyboardInterrupt:
        _fail(Interrupted("interrupted", hint="run the same command again to resume"), debug)
    except HfpullError as error:
        _fail(error, debug)
    except Exception as error:  # a bug: say so, in one line unless --debug
        if debug:
            traceback.print_exc()
        _say(f"hfpull: internal error: {type(error).__name__}: {error}", "run with --debug")
        raise typer.Exit(ExitCode.FAILURE) from None
    if json_out:
        print(json.dumps(_result_json(result), indent=2))
    else:
        print(result.path)


def _fail(error: HfpullError, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exc()
    _say(f"hfpull: error: {error.message}", error.hint)
    raise typer.Exit(error.exit_code)


def _say(line: str, hint: str | None) -> None:
    """Errors are plain unwrapped lines on stderr, whatever the terminal width."""
    print(line.replace("\n", " "), file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def _install_sigterm() -> None:
    """SIGTERM stops like Ctrl-C (partials kept); a second Ctrl-C exits at once."""

    def on_signal(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGINT, lambda *_: os._exit(ExitCode.INTERRUPTED))
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _result_json(result: GetResult) -> dict[str, Any]:
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


def _print_plan(plan: Plan, free: int, as_json: bool) -> None:
    snap = plan.snapshot
    rows: list[dict[str, Any]] = [
        {
            "path": p.file.path,
            "size": p.file.size,
            "lfs": p.file.is_lfs,
            "action": "fetch" if p.status is FileStatus.FETCH else "present",
            "partial_bytes": p.partial_bytes,
        }
        for p in plan.files
    ]
    summary = {
        "repo": snap.repo.repo_id,
        "type": snap.repo.repo_type,
        "revision": snap.revision,
        "commit": snap.commit,
        "files": rows,
        "skipped": [f.path for f in plan.skipped],
        "total_bytes": plan.total_bytes,
        "bytes_to_fetch": plan.bytes_to_fetch,
        "free_disk_bytes": free,
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"{snap.repo.repo_id} ({snap.repo.repo_type}) @ {snap.revision} = {snap.commit}")
    for row in rows:
        out.print(f"  {row['action']:<8} {_human(row['size']):>10}  {row['path']}", markup=False)
    out.print(
        f"{len(rows)} files selected ({len(plan.skipped)} skipped), "
        f"{_human(plan.total_bytes)} in all; "
        f"to fetch: {_human(plan.bytes_to_fetch)}; free disk: {_human(free)}"
    )


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def main() -> None:
    app(prog_name="hfpull")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
