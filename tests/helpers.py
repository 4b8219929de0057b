"""Small helpers shared by the integration tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hfpull.models import RepoRef

MiB = 1 << 20


def random_file(directory: Path, name: str, size: int) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 4 * MiB))
            handle.write(chunk)
            remaining -= len(chunk)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def repo_dir(cache: Path, repo_id: str, repo_type: str = "model") -> Path:
    return cache / RepoRef(repo_id, repo_type).cache_folder_name


LEFTOVER_SUFFIXES = (".incomplete", ".journal", ".tmp", ".lock", ".owner", ".aside", ".adopting")


def leftovers(root: Path) -> list[Path]:
    """Partials, journals, temp files and claim/lock files left anywhere below ``root``."""
    return [p for p in root.rglob("*") if p.name.endswith(LEFTOVER_SUFFIXES)]


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()
