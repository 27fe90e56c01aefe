"""Plain-text tables for the terminal."""

from __future__ import annotations


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Plain text, columns aligned: easy to read in a terminal and to paste."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [header, tuple("-" * w for w in widths), *rows]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)

