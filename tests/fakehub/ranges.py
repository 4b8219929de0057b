"""HTTP Range / If-Range selection (single ranges only; anything fancier gets the full body)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    status: int  # 200, 206 or 416
    start: int
    length: int
    content_range: str | None = None


def select_span(size: int, range_header: str | None, if_range: str | None, etag: str) -> Span:
    full = Span(200, 0, size)
    if not range_header:
        return full
    if if_range is not None and not _same_etag(if_range, etag):
        return full
    unit, _, spec = range_header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or "," in spec or not dash:
        return full
    first, last = first.strip(), last.strip()
    if not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return full
    unsatisfiable = Span(416, 0, 0, f"bytes */{size}")
    if not first:
        if not last:
            return full
        suffix = int(last)
        if suffix == 0 or size == 0:
            return unsatisfiable
        start, end = max(0, size - suffix), size - 1
    else:
        start = int(first)
        end = int(last) if last else size - 1
        if last and end < start:
            return full
        if start >= size:
            return unsatisfiable
        end = min(end, size - 1)
    return Span(206, start, end - start + 1, f"bytes {start}-{end}/{size}")


def _same_etag(if_range: str, etag: str) -> bool:
    """Strong comparison; an HTTP-date or weak validator never matches."""
    value = if_range.strip()
    return value == etag or (not value.startswith(("W/", '"')) and f'"{value}"' == etag)
