"""hfpull: fast, resumable, verified downloads of Hugging Face repos."""

from __future__ import annotations

from hfpull.pull import get
from hfpull.version import __version__

__all__ = ["__version__", "get"]
