"""What every command shares: settings from options and environment, and the one place that
turns failures into a line on stderr and a documented exit code."""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn

import typer

from hfpull.errors import ExitCode, HfpullError, Interrupted, UsageError
from hfpull.settings import Settings, from_environment

Debug = Annotated[bool, typer.Option("--debug", help="Tracebacks on errors.")]


def settings(
    cache_dir: Path | None,
    local_dir: Path | None,
    endpoint: str | None,
    mirror: list[str] | None,
    token: str | None,
    **overrides: Any,
) -> Settings:
    if cache_dir is not None and local_dir is not None:
        raise UsageError("use either --cache-dir or --local-dir, not both")
    return from_environment(
        endpoint=endpoint, mirrors=tuple(mirror or ()), token=token, cache_dir=cache_dir,
        local_dir=local_dir, **overrides,
    )  # fmt: skip


@contextmanager
def errors(debug: bool) -> Iterator[None]:
    """Every failure becomes one line (plus a hint) and its documented exit code."""
    _install_signals()
    try:
        yield
    except KeyboardInterrupt:
        _interrupted(Interrupted("interrupted", hint="run the same command again to resume"))
    except Interrupted as error:
        _interrupted(error)
    except HfpullError as error:
        _fail(error, debug)
    except (typer.Exit, SystemExit):
        raise
    except Exception as error:  # a bug: say so, in one line unless --debug
        if debug:
            traceback.print_exc()
        _say(f"hfpull: internal error: {type(error).__name__}: {error}", "run with --debug")
        raise typer.Exit(ExitCode.FAILURE) from None


def _interrupted(error: HfpullError) -> NoReturn:
    """Exit now: a worker stuck in a stalled read must not hold the process for a whole
    read timeout. Journals are already flushed; written bytes are in the page cache."""
    _say(f"hfpull: {error.message}", error.hint)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(ExitCode.INTERRUPTED)


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


def _install_signals() -> None:
    """SIGTERM stops like Ctrl-C (partials kept); a second Ctrl-C exits at once."""

    def on_signal(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGINT, lambda *_: os._exit(ExitCode.INTERRUPTED))
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


@contextmanager
def open_input(name: str) -> Iterator[IO[bytes]]:
    """An input file named on the command line, ``-`` for stdin; a file that cannot be read
    is a usage error (one line, exit 2)."""
    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = open(name, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}") from None
    with handle:
        yield handle
