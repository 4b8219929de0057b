"""Byte sizes as people write them: ``500G``, ``500GB``, ``10GiB``, ``1.5T``, ``123456``."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from hfpull.errors import UsageError

# A bare letter is decimal like its "B" form: read off `df -h` (binary), it errs small.
_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12, "p": 10**15, "pb": 10**15,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
}  # fmt: skip
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_size(text: str, option: str = "--max-cache-size") -> int:
    """Bytes in ``text``: K/M/G/T/P (or KB, MB, …) are powers of 1000, KiB/MiB/GiB/TiB/PiB
    powers of 1024, case-insensitive; fractions allowed (``1.5T``), rounded down."""
    match = _SIZE.fullmatch(text)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise UsageError(
            f"{option}: cannot read {text[:40]!r} as a size "
            "(examples: 500G, 500GB = 500*10^9 bytes, 10GiB = 10*2^30 bytes, 1.5T, 1000000)"
        )
    try:
        size = int(Decimal(match.group(1)) * unit)
    except InvalidOperation:  # pragma: no cover - the pattern only lets numbers through
        raise UsageError(f"{option}: cannot read {text[:40]!r} as a size") from None
    if size <= 0:
        raise UsageError(f"{option}: must be more than 0 bytes, got {text[:40]!r}")
    return size
