"""Settings resolved once from flags and environment; core code never reads os.environ."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hfpull.errors import UsageError

DEFAULT_ENDPOINT = "https://huggingface.co"
MiB = 1 << 20


@dataclass(frozen=True)
class Settings:
    endpoint: str = DEFAULT_ENDPOINT
    mirrors: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)  # never printed
    cache_dir: Path = field(default_factory=lambda: Path("~/.cache/huggingface/hub").expanduser())
    local_dir: Path | None = None
    max_workers: int = 16  # files fetched at once (each holds one connection of the budget)
    connections: int = 0  # connections for the whole run: 0 adapts (8 up to 32), N pins it
    segment_size: int = 32 * MiB  # largest piece (Range request); 0: no cap
    min_split: int = 2 * MiB  # a piece in flight is split in two only if both halves are this big
    small_blob: int = 1 * MiB  # blobs up to this size skip the claim (engine/small.py); 0: none
    connect_timeout: float = 10.0
    read_timeout: float = 30.0  # no byte for this long: the connection is cut and resumed
    min_speed: int = 1024  # bytes/s; slower than this over stall_window: cut and resume
    stall_window: float = 60.0
    max_retries: int = 6  # consecutive failures of one request on one source
    backoff_base: float = 1.0  # seconds; doubles per retry
    backoff_max: float = 30.0
    retry_after_max: float = 120.0
    source_drop_after: int = 8  # consecutive failures before a source is dropped for the run
    check_disk: bool = True
    lease_seconds: float = 120.0  # a partial's owner we cannot check, silent this long: gone
    offline: bool = False  # HF_HUB_OFFLINE: do not ask the network when a local answer exists

    @property
    def sources(self) -> tuple[str, ...]:
        """Mirrors first, then the origin; each URL once, without a trailing slash."""
        ordered: list[str] = []
        for url in (*self.mirrors, self.endpoint):
            url = url.rstrip("/")
            if url not in ordered:
                ordered.append(url)
        return tuple(ordered)


# Tuning knobs for slow links and tests; documented in docs/usage.md.
ENV_KNOBS: dict[str, tuple[str, type]] = {
    "HFPULL_MAX_RETRIES": ("max_retries", int),
    "HFPULL_BACKOFF_BASE": ("backoff_base", float),
    "HFPULL_READ_TIMEOUT": ("read_timeout", float),
    "HFPULL_CONNECT_TIMEOUT": ("connect_timeout", float),
    "HFPULL_STALL_WINDOW": ("stall_window", float),
    "HFPULL_SEGMENT_SIZE": ("segment_size", int),
    "HFPULL_LEASE_SECONDS": ("lease_seconds", float),
    "HFPULL_SMALL_BLOB": ("small_blob", int),
}


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """Same resolution as huggingface_hub: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return _expand(env[var])
    return hf_home(env) / "hub"


def hf_home(env: Mapping[str, str]) -> Path:
    if env.get("HF_HOME"):
        return _expand(env["HF_HOME"])
    xdg = env.get("XDG_CACHE_HOME")
    base = _expand(xdg) if xdg else Path("~/.cache").expanduser()
    return base / "huggingface"


def _expand(value: str) -> Path:
    return Path(os.path.expandvars(value)).expanduser()


def resolve_token(explicit: str | None, env: Mapping[str, str]) -> str | None:
    """--token, else HF_TOKEN / HUGGING_FACE_HUB_TOKEN, else the token huggingface_hub stored."""
    for candidate in (explicit, env.get("HF_TOKEN"), env.get("HUGGING_FACE_HUB_TOKEN")):
        if candidate and candidate.strip():
            return candidate.strip()
    if env.get("HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        return None
    path = env.get("HF_TOKEN_PATH")
    token_file = _expand(path) if path else hf_home(env) / "token"
    try:
        stored = token_file.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return stored or None


def env_mirrors(env: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(m.strip() for m in env.get("HFPULL_MIRRORS", "").split(",") if m.strip())


def from_environment(
    env: Mapping[str, str] | None = None,
    *,
    endpoint: str | None = None,
    mirrors: tuple[str, ...] = (),
    token: str | None = None,
    cache_dir: Path | None = None,
    local_dir: Path | None = None,
    **overrides: object,
) -> Settings:
    """Build Settings from explicit values, falling back to the environment like huggingface_hub."""
    env = os.environ if env is None else env
    for var, (name, kind) in ENV_KNOBS.items():
        if name not in overrides and env.get(var):
            try:
                overrides[name] = kind(env[var])
            except ValueError:
                raise UsageError(f"{var}={env[var]!r} is not a valid number") from None
    return Settings(
        endpoint=(endpoint or env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
        mirrors=tuple(mirrors) or env_mirrors(env),
        token=resolve_token(token, env),
        cache_dir=cache_dir.expanduser() if cache_dir else default_cache_dir(env),
        local_dir=local_dir.expanduser() if local_dir else None,
        offline=_truthy(env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE")),
        **overrides,  # type: ignore[arg-type]
    )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")
