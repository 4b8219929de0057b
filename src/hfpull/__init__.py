"""hfpull: fast, resumable, verified downloads of Hugging Face repos."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hfpull.version import __version__

if TYPE_CHECKING:
    from hfpull.pull import get

__all__ = ["__version__", "get"]


def __getattr__(name: str) -> Any:
    """``hfpull.get`` on first use: importing the package (as ``hfpull --help`` does) must
    not pull in the engine, requests and the cache code (benchmarks/bench_startup.py)."""
    if name == "get":
        from hfpull.pull import get

        return get
    raise AttributeError(f"module 'hfpull' has no attribute {name!r}")
