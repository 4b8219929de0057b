"""Every failure hfpull reports: one readable line, a hint, and a documented exit code.

The CLI is the only place that turns these into exit codes; the core raises them.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; documented in README.md and docs/usage.md."""

    OK = 0
    FAILURE = 1  # unexpected internal error (a bug): run with --debug and report it
    USAGE = 2  # bad arguments: repo id, revision syntax, filters that match nothing
    NETWORK = 3  # every source unreachable or retries exhausted
    INTEGRITY = 4  # downloaded bytes do not match the published hash
    DISK = 5  # disk full, permission denied, other local I/O errors
    UNSAFE = 6  # the server sent names or ids that could escape the target
    AUTH = 7  # gated or private repo without access, invalid token
    NOT_FOUND = 8  # repo, revision or file does not exist
    INTERRUPTED = 130  # Ctrl-C / SIGTERM; partial downloads are kept for resume


class HfpullError(Exception):
    """Base of every expected failure. ``str(err)`` is the one-line message."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(HfpullError):
    exit_code = ExitCode.USAGE


class NetworkError(HfpullError):
    exit_code = ExitCode.NETWORK


class IntegrityError(HfpullError):
    exit_code = ExitCode.INTEGRITY


class DiskError(HfpullError):
    exit_code = ExitCode.DISK


class UnsafeInputError(HfpullError):
    exit_code = ExitCode.UNSAFE


class AuthError(HfpullError):
    exit_code = ExitCode.AUTH


class NotFoundError(HfpullError):
    exit_code = ExitCode.NOT_FOUND


class RepoNotFoundError(NotFoundError):
    pass


class RevisionNotFoundError(NotFoundError):
    pass


class EntryNotFoundError(NotFoundError):
    pass


class GatedRepoError(AuthError):
    pass


class InvalidTokenError(AuthError):
    pass


class Interrupted(HfpullError):
    exit_code = ExitCode.INTERRUPTED
