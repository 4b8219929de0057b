"""hfpull: fast, resumable, verified downloads of Hugging Face repos."""

from __future__ import annotations

__version__ = "0.1.0"

from .api import get

__all__ = ["__version__", "get"]
