"""Typer CLI: options -> Settings -> one core call -> render. The only place that maps
errors to exit codes and prints them."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

try:  # typer >= 0.26 vendors its own click; its usage errors are not click's
    from typer._click.exceptions import UsageError as CommandLineError
except ImportError:  # pragma: no cover
    from click import UsageError as CommandLineError  # type: ignore[assignment]

from hfpull.cli.plumbing import Debug, open_input
from hfpull.cli.plumbing import errors as _errors
from hfpull.cli.plumbing import settings as _settings
from hfpull.cli.render import (
    failure_summary_lines,
    human,
    plan_json,
    print_plan,
    result_json,
    summary_lines,
)
from hfpull.cli.serve import serve_app
from hfpull.errors import ExitCode, UsageError
from hfpull.models import RepoRef
from hfpull.version import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fast, resumable, verified downloads of Hugging Face repos.",
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,  # plain click help: rendering it with rich costs ~50 ms per run
    pretty_exceptions_enable=False,
)


# -- closed choices: the option parser rejects anything else (exit 2, like any bad option) ----
class RepoTypeChoice(str, Enum):
    model = "model"
    dataset = "dataset"
    space = "space"


class CompressionChoice(str, Enum):
    none = "none"
    gzip = "gzip"
    zstd = "zstd"


class AgainstChoice(str, Enum):
    hub = "hub"
    manifest = "manifest"
    lock = "lock"


# -- options shared by several commands -------------------------------------------------------
RepoType = Annotated[RepoTypeChoice, typer.Option("--repo-type", help="model, dataset or space.")]
Revision = Annotated[str, typer.Option("--revision", help="Branch, tag or commit.")]
Include = Annotated[
    list[str] | None, typer.Option("--include", help="Only files matching this glob (repeatable).")
]
Exclude = Annotated[
    list[str] | None, typer.Option("--exclude", help="Skip files matching this glob (repeatable).")
]
CacheDir = Annotated[
    Path | None, typer.Option("--cache-dir", help="HF cache folder (default: as huggingface_hub).")
]
LocalDir = Annotated[
    Path | None, typer.Option("--local-dir", help="Plain files in this folder instead.")
]
Endpoint = Annotated[
    str | None,
    typer.Option("--endpoint", help="Origin (default: $HF_ENDPOINT or huggingface.co)."),
]
Mirror = Annotated[
    list[str] | None,
    typer.Option("--mirror", help="Mirror tried before the origin (repeatable; $HFPULL_MIRRORS)."),
]
Token = Annotated[
    str | None, typer.Option("--token", help="HF token (default: $HF_TOKEN or the stored one).")
]
MaxWorkers = Annotated[int, typer.Option("--max-workers", min=1, max=64, help="Files at once.")]
Connections = Annotated[
    int,
    typer.Option(
        "--connections",
        min=0,
        max=32,
        help="Connections for the whole run, shared by all files (0: adapt, from 8 up to 32).",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
Progress = Annotated[
    bool, typer.Option("--progress", help="Show progress even when stderr is not a terminal.")
]
JsonOut = Annotated[bool, typer.Option("--json", help="One JSON report on stdout.")]


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
    repo_id: Annotated[
        str | None, typer.Argument(help="Repo id, e.g. tencent/HunyuanOCR (or use --lock).")
    ] = None,
    repo_type: RepoType = RepoTypeChoice.model,
    revision: Revision = "main",
    include: Include = None,
    exclude: Exclude = None,
    cache_dir: CacheDir = None,
    local_dir: LocalDir = None,
    endpoint: Endpoint = None,
    mirror: Mirror = None,
    token: Token = None,
    max_workers: MaxWorkers = 16,
    connections: Connections = 0,
    lock: Annotated[
        Path | None, typer.Option("--lock", help="Fetch exactly what this lock file pins.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan; download nothing.")
    ] = False,
    json_out: JsonOut = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress display and no summary at the end."),
    ] = False,
    progress: Progress = False,
    debug: Debug = False,
) -> None:
    """Download a repo into the HF cache (or --local-dir); print the snapshot path."""
    from hfpull.lock import get_locked, read_lock
    from hfpull.pull import Session

    with _errors(debug):
        if (repo_id is None) == (lock is None):
            raise UsageError("give a REPO_ID or --lock FILE (one of them)")
        settings = _settings(
            cache_dir, local_dir, endpoint, mirror, token, max_workers=max_workers,
            connections=connections,
        )  # fmt: skip
        show = _show_progress(progress, quiet or json_out or dry_run)
        session: Session | None = None
        try:
            with _renderer(show) as renderer:
                if lock is not None:
                    results = [get_locked(r, settings, renderer) for r in read_lock(lock)]
                else:
                    assert repo_id is not None
                    session = Session(
                        repo_id, repo_type=repo_type.value, revision=revision,
                        settings=settings, progress=renderer,
                    )  # fmt: skip
                    plan = session.plan(include or (), exclude or ())
                    if dry_run:
                        free = session.free_disk()
                        if json_out:
                            print(json.dumps(plan_json(plan, free), indent=2))
                        else:
                            print_plan(plan, free)
                        return
                    results = [session.run(plan)]
        except BaseException:  # a partial failure: say what did land, then the error
            if not quiet and session is not None and session.tally is not None:
                _to_stderr(failure_summary_lines(session.repo.repo_id, session.tally))
            raise
    if not quiet:
        for result in results:
            _to_stderr(summary_lines(result))
    if json_out:
        reports = [result_json(r) for r in results]
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    else:
        for result in results:
            print(result.path)


@app.command()
def pack(
    repo_id: Annotated[str, typer.Argument(help="Repo id.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Archive file, or - for stdout.")],
    repo_type: RepoType = RepoTypeChoice.model,
    revision: Revision = "main",
    include: Include = None,
    exclude: Exclude = None,
    compression: Annotated[
        CompressionChoice,
        typer.Option("--compression", help="none, gzip or zstd (zstd: pip install hfpull[zstd])."),
    ] = CompressionChoice.none,
    offline: Annotated[
        bool, typer.Option("--offline", help="Use only the cache; fail if anything is missing.")
    ] = False,
    cache_dir: CacheDir = None,
    endpoint: Endpoint = None,
    mirror: Mirror = None,
    token: Token = None,
    max_workers: MaxWorkers = 16,
    connections: Connections = 0,
    quiet: Quiet = False,
    progress: Progress = False,
    debug: Debug = False,
) -> None:
    """Write a verified, reproducible archive of a repo (fetching what the cache lacks)."""
    from hfpull.pack import pack as pack_repo

    with _errors(debug):
        settings = _settings(
            cache_dir, None, endpoint, mirror, token, max_workers=max_workers,
            connections=connections,
        )  # fmt: skip
        to_stdout = output == "-"
        if to_stdout and sys.stdout.isatty():
            raise UsageError("refusing to write an archive to a terminal", hint="use -o FILE")
        target: Any = sys.stdout.buffer if to_stdout else Path(output)
        with _renderer(_show_progress(progress, quiet)) as renderer:
            result = pack_repo(
                repo_id, target, repo_type=repo_type.value, revision=revision,
                include=include or (), exclude=exclude or (), compression=compression.value,
                offline=offline, settings=settings, progress=renderer,
            )  # fmt: skip
    size = f"{result.size} bytes ({human(result.size)})"
    line = f"{'-' if to_stdout else output}  {size}  sha256 {result.sha256}"
    print(line, file=sys.stderr if to_stdout else sys.stdout)


@app.command()
def unpack(
    archive: Annotated[str, typer.Argument(help="Archive file, or - for stdin.")],
    cache_dir: CacheDir = None,
    local_dir: LocalDir = None,
    quiet: Quiet = False,
    progress: Progress = False,
    debug: Debug = False,
) -> None:
    """Check an archive completely, then restore it into the HF cache (or --local-dir)."""
    from hfpull.unpack import unpack as unpack_archive

    with _errors(debug):
        settings = _settings(cache_dir, local_dir, None, None, None)
        show = _show_progress(progress, quiet)
        with _renderer(show) as renderer, open_input(archive) as handle:
            result = unpack_archive(handle, settings, renderer)
    print(result.path)


@app.command()
def verify(
    target: Annotated[
        str | None, typer.Argument(help="Repo id (cached), folder, or archive file.")
    ] = None,
    repo_type: RepoType = RepoTypeChoice.model,
    revision: Revision = "main",
    against: Annotated[
        AgainstChoice | None,
        typer.Option("--against", help="hub (default for repo ids), manifest or lock."),
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="Archive or manifest JSON to check against.")
    ] = None,
    lock: Annotated[Path | None, typer.Option("--lock", help="Lock file to check against.")] = None,
    include: Include = None,
    exclude: Exclude = None,
    fail_on_extra: Annotated[
        bool, typer.Option("--fail-on-extra", help="Files not expected count as failures.")
    ] = False,
    repair: Annotated[
        bool, typer.Option("--repair", help="Refetch only the broken or missing files.")
    ] = False,
    cache_dir: CacheDir = None,
    endpoint: Endpoint = None,
    mirror: Mirror = None,
    token: Token = None,
    json_out: JsonOut = False,
    debug: Debug = False,
) -> None:
    """Re-hash every file and compare; exit 0 only when intact, 4 when not (docs/verify.md)."""
    from hfpull.verify import repair as repair_snapshot
    from hfpull.verify import verify_target

    with _errors(debug):
        if against is AgainstChoice.manifest and manifest is None:
            raise UsageError("--against manifest needs --manifest FILE")
        if against is AgainstChoice.lock and lock is None:
            raise UsageError("--against lock needs --lock FILE")
        settings = _settings(cache_dir, None, endpoint, mirror, token)
        reports = verify_target(
            target, repo_type=repo_type.value, revision=revision, manifest=manifest, lock=lock,
            include=include or (), exclude=exclude or (), settings=settings,
            strict_hub=against is AgainstChoice.hub,
            note=lambda message: print(message, file=sys.stderr),
        )  # fmt: skip
        if repair:
            reports = [
                repair_snapshot(r, repo_type.value, settings) if not r.intact(fail_on_extra) else r
                for r in reports
            ]
    intact = all(r.intact(fail_on_extra) for r in reports)
    if json_out:
        doc = [_report_json(r, fail_on_extra) for r in reports]
        print(json.dumps(doc[0] if len(doc) == 1 else doc, indent=2))
    else:
        for report in reports:
            for problem in report.problems:
                print(problem.describe())
            state = "intact" if report.intact(fail_on_extra) else "NOT intact"
            print(f"{report.target}: {report.checked} files checked, {state}")
    raise typer.Exit(ExitCode.OK if intact else ExitCode.INTEGRITY)


@app.command()
def lock(
    repos: Annotated[list[str], typer.Argument(help="REPO_ID or REPO_ID@REVISION, one or more.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Lock file to write.")] = Path(
        "hfpull.lock"
    ),
    repo_type: RepoType = RepoTypeChoice.model,
    include: Include = None,
    exclude: Exclude = None,
    endpoint: Endpoint = None,
    mirror: Mirror = None,
    token: Token = None,
    debug: Debug = False,
) -> None:
    """Pin repos to commits with every selected file's hash (no download)."""
    from hfpull.lock import create_lock, write_lock

    with _errors(debug):
        settings = _settings(None, None, endpoint, mirror, token)
        locked = create_lock(
            repos, repo_type=repo_type.value, include=include or (), exclude=exclude or (),
            settings=settings,
        )  # fmt: skip
        write_lock(output, locked)
    for entry in locked:
        print(f"{entry.repo.repo_id}@{entry.revision} = {entry.commit} ({len(entry.files)} files)")


@app.command()
def prewarm(
    repos: Annotated[
        list[str] | None,
        typer.Argument(help="REPO_ID or REPO_ID@REVISION, one or more (or use --lock)."),
    ] = None,
    mirror: Annotated[
        str | None,
        typer.Option("--mirror", help="The hfpull serve to fill (default: $HF_ENDPOINT)."),
    ] = None,
    repo_type: RepoType = RepoTypeChoice.model,
    include: Include = None,
    exclude: Exclude = None,
    lock: Annotated[
        Path | None, typer.Option("--lock", help="Fill exactly what this lock file pins.")
    ] = None,
    token: Token = None,
    quiet: Quiet = False,
    progress: Progress = False,
    debug: Debug = False,
) -> None:
    """Make a mirror fetch and store repos, no bytes sent here; exit 0 once all are stored."""
    from hfpull.lock import read_lock
    from hfpull.names import parse_repo_spec
    from hfpull.prewarm import MirrorAdmin, PrewarmRequest
    from hfpull.prewarm import prewarm as prewarm_mirror

    with _errors(debug):
        if bool(repos) == (lock is not None):
            raise UsageError("give REPO_ID[@REVISION]... or --lock FILE (one of them)")
        if lock is not None and (include or exclude):
            raise UsageError("--lock pins the files already; drop --include/--exclude")
        settings = _settings(None, None, mirror, None, token)
        wanted: list[PrewarmRequest] = []
        for entry in read_lock(lock) if lock is not None else []:
            wanted.append(PrewarmRequest(entry.repo, entry.commit, files=entry.files))
        for spec in repos or []:
            repo_id, revision = parse_repo_spec(spec)
            repo = RepoRef(repo_id, repo_type.value)
            wanted.append(
                PrewarmRequest(repo, revision, tuple(include or ()), tuple(exclude or ()))
            )
        admin = MirrorAdmin(settings.endpoint, settings.token)
        with _renderer(_show_progress(progress, quiet)) as renderer:
            jobs = prewarm_mirror(admin, wanted, renderer)
    for job in jobs:
        size = human(job.bytes_total)
        print(f"{job.repo.repo_id}@{job.revision} = {job.commit}: {len(job.files)} files "
              f"({size}) stored in {settings.endpoint}")  # fmt: skip


# -- plumbing ---------------------------------------------------------------------------------


def _to_stderr(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def _show_progress(forced: bool, suppressed: bool) -> bool:
    return forced or (not suppressed and sys.stderr.isatty())


@contextmanager
def _renderer(show: bool) -> Iterator[Callable[..., None] | None]:
    if not show:
        yield None
        return
    from rich.console import Console

    from hfpull.cli.progress import RichProgress

    with RichProgress(Console(stderr=True)) as renderer:
        yield renderer


def _report_json(report: Any, fail_on_extra: bool) -> dict[str, Any]:
    return {
        "target": report.target,
        "repo": report.repo,
        "commit": report.commit,
        "checked": report.checked,
        "intact": report.intact(fail_on_extra),
        "problems": [
            {
                "path": p.path,
                "kind": p.kind,
                "expected": p.expected,
                "actual": p.actual,
                "algorithm": p.algorithm,
            }
            for p in report.problems
        ],
    }


app.add_typer(serve_app, name="serve")


def main() -> None:
    """Run the CLI; a bad command line is one line on stderr and exit 2, like every error."""
    try:
        code = app(prog_name="hfpull", standalone_mode=False)
    except CommandLineError as exc:
        command = exc.ctx.command_path if exc.ctx else "hfpull"
        print(f"hfpull: error: {exc.format_message()}", file=sys.stderr)
        print(f"hint: see '{command} -h'", file=sys.stderr)
        sys.exit(ExitCode.USAGE)
    except typer.Abort:
        sys.exit(ExitCode.INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
