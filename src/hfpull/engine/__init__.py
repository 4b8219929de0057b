"""Bytes from the sources into partials, verified as they land, many blobs at once."""
