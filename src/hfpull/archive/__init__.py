"""The offline archive format: its manifest and compression."""
