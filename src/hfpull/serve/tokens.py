"""The ``--auth-tokens`` file: ``NAME TOKEN [SCOPE...]`` per line, ``#`` comments.

A SCOPE is a repo glob (the gated/private repos this token may read) or ``+admin``.
Tokens are compared in constant time. Error messages name the line, never its content
(a misplaced field may be a token). The file is re-read on SIGHUP and when its size,
mtime or inode change (looked at most once a second); a reload that fails keeps the
table in force and logs a warning.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from hfpull.errors import UsageError
from hfpull.serve.access import Principal, is_repo_glob

log = logging.getLogger("hfpull.serve")

ADMIN_SCOPE = "+admin"
MIN_TOKEN_LENGTH = 16
CHECK_INTERVAL = 1.0
_NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]+")


class TokensFileError(UsageError):
    """The tokens file cannot be used (the message names the line, never a token)."""


@dataclass(frozen=True)
class TokenEntry:
    name: str
    token: bytes = field(repr=False)
    admin: bool = False
    grants: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenTable:
    entries: tuple[TokenEntry, ...] = ()

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of a mirror token in an Authorization header (Bearer, or Basic with
        the token as password, or as user name with no password); None if it has none."""
        secret = credential(authorization)
        if secret is None:
            return None
        found: TokenEntry | None = None
        for entry in self.entries:  # every entry, so the time taken says nothing
            if hmac.compare_digest(entry.token, secret):
                found = entry
        if found is None:
            return None
        return Principal(found.name, found.admin, found.grants)


def credential(authorization: str | None) -> bytes | None:
    """The secret in an Authorization header: a bearer token or a basic-auth password."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if not value:
        return None
    if scheme.lower() == "bearer":
        return value.encode("utf-8", "replace")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        user, _, password = decoded.partition(b":")
        return password or user or None
    return None


def bearer_token(authorization: str | None) -> str | None:
    """A client's own HF token, as huggingface_hub sends it (``Bearer hf_...``)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def parse_tokens(text: str, source: str) -> TokenTable:
    entries: list[TokenEntry] = []
    names: dict[str, int] = {}
    tokens: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = []
        for item in line.split():
            if item.startswith("#"):
                break
            fields.append(item)
        if not fields:
            continue
        where = f"{source}: line {number}"
        if len(fields) < 2:
            raise TokensFileError(f"{where}: expected NAME TOKEN [SCOPE...]")
        name, token, scopes = fields[0], fields[1], fields[2:]
        if not _NAME_RE.fullmatch(name):
            raise TokensFileError(f"{where}: the NAME must be 1-64 of A-Z a-z 0-9 . _ @ -")
        if len(token) < MIN_TOKEN_LENGTH or not _TOKEN_RE.fullmatch(token):
            raise TokensFileError(
                f"{where}: the TOKEN must be at least {MIN_TOKEN_LENGTH} of "
                "A-Z a-z 0-9 . _ ~ + / = - (e.g. openssl rand -hex 32)"
            )
        if name in names:
            raise TokensFileError(f"{where}: the NAME is already used on line {names[name]}")
        secret = token.encode()
        if secret in tokens:
            raise TokensFileError(f"{where}: the TOKEN is already used on line {tokens[secret]}")
        grants = []
        for index, scope in enumerate(scopes, 1):
            if scope == ADMIN_SCOPE:
                continue
            if not is_repo_glob(scope):
                raise TokensFileError(f"{where}: scope {index} is not +admin or a repo glob")
            grants.append(scope)
        names[name], tokens[secret] = number, number
        entries.append(TokenEntry(name, secret, ADMIN_SCOPE in scopes, tuple(grants)))
    return TokenTable(tuple(entries))


class TokensFile:
    """The tokens table in force, re-read from ``path`` when it changes or on request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature = self._stat()
        self.table = self._read()  # at start, a bad file is an error: refuse to run
        self._checked = time.monotonic()
        if self.path.stat().st_mode & 0o004:
            log.warning("hfpull serve: %s is readable by every user (chmod 600 it)", path)

    def current(self) -> TokenTable:
        """The table, after a cheap change check at most once a second."""
        now = time.monotonic()
        if now - self._checked >= CHECK_INTERVAL:
            self._checked = now
            try:
                signature = self._stat()
            except TokensFileError:
                signature = None
            if signature is not None and signature != self._signature:
                self.reload()
        return self.table

    def reload(self) -> bool:
        """Re-read the file now (SIGHUP); on any problem keep the old table and warn."""
        try:
            signature = self._stat()
            table = self._read()
        except TokensFileError as exc:
            log.warning("hfpull serve: tokens file not reloaded, the old one stays: %s", exc)
            return False
        self.table, self._signature = table, signature
        log.warning(
            "hfpull serve: tokens file reloaded: %d tokens from %s", len(table.entries), self.path
        )
        return True

    def _stat(self) -> tuple[int, int, int]:
        try:
            info = os.stat(self.path)
        except OSError as exc:
            raise TokensFileError(f"{self.path}: {exc.strerror}") from None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def _read(self) -> TokenTable:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise TokensFileError(f"{self.path}: {reason}") from None
        return parse_tokens(text, str(self.path))
