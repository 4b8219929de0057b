"""Shared fixtures: the fake Hub, fast retry settings, and running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hfpull.settings import Settings
from tests.fakehub.fixtures import fake_hub  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def fast_settings(hub_url: str, cache: Path, **overrides: Any) -> Settings:
    """Settings for loopback tests: short timeouts and near-zero backoff, never huggingface.co."""
    values: dict[str, Any] = dict(
        endpoint=hub_url,
        cache_dir=cache,
        connect_timeout=2.0,
        read_timeout=2.0,
        stall_window=1.0,
        min_speed=1000,
        backoff_base=0.01,
        backoff_max=0.05,
        retry_after_max=2.0,
        max_retries=4,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hub-cache"


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a CLI subprocess: no real token, cache, or endpoint leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFPULL_"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def until(condition: Callable[[], object], what: str, seconds: float = 10.0) -> None:
    """Poll ``condition`` every 10 ms until it holds; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.01)


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCli:
    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
        return subprocess.run(
            [sys.executable, "-m", "hfpull", *args],
            capture_output=True,
            text=True,
            env=env or cli_env(tmp_path),
            timeout=timeout,
            cwd=ROOT,
        )

    return run


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One SeaweedFS for the session, started by the first test that needs it."""
    from tests.s3_helpers import SeaweedFS

    server = SeaweedFS(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_objects(seaweed: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An S3ObjectStore on a fresh bucket of the session's SeaweedFS."""
    from hfpull.blobstore.s3 import S3Config, S3ObjectStore

    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    config = S3Config(seaweed.new_bucket(), "mirror/", seaweed.endpoint, "us-east-1")
    return S3ObjectStore(config)
