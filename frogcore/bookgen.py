"""Generated parts of the book's Markdown pages, written at build time into ``book/_generated/``.

:func:`write_all` is called by :func:`frogcore.pipeline.build_book` before jupyter-book runs: the
introduction's paper-vs-ours summary (from the stored chapter results) and the benchmark tables. Pages pull
these files in with MyST ``{include}`` / ``{csv-table}`` directives, so the numbers they show come from stored
results and never go stale.
"""
from __future__ import annotations

import os
from pathlib import Path

GENERATED = "_generated"


def write_all(book: str | os.PathLike, profile: str = "default", device: str = "cpu") -> list[Path]:
    """Write every generated file under ``<book>/_generated/``; return their paths."""
    from .paper import write_summary_page
    from .pipeline import copy_benchmark_tables

    book = Path(book)
    out = copy_benchmark_tables(book)
    out.append(write_summary_page(book / GENERATED / "paper_summary.md", profile, device))
    return out
