"""Shared fixtures. Tests never write into the repository's results/ or checkpoints/: FROG_RESULTS_DIR
and FROG_CHECKPOINT_DIR point to temporary folders for the whole session."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_RESULTS = tempfile.mkdtemp(prefix="frog-test-results-")
os.environ["FROG_RESULTS_DIR"] = _RESULTS
os.environ["FROG_CHECKPOINT_DIR"] = tempfile.mkdtemp(prefix="frog-test-checkpoints-")
os.environ.pop("FROG_RECOMPUTE", None)


@pytest.fixture(scope="session")
def results_dir() -> Path:
    return Path(_RESULTS)


@pytest.fixture(scope="session")
def executed_book(tmp_path_factory):
    """Every notebook executed once at the smoke profile on CPU, inside a copy of the book tree.

    Returns ``(book_dir, {notebook_name: executed_path}, {notebook_name: error or None})``; the
    notebook tests assert on the executed copies and the book test builds from them.
    """
    import shutil

    from frogcore.pipeline import BOOK_DIR, EXECUTED, execute_notebook, list_notebooks

    book = tmp_path_factory.mktemp("book") / "book"
    shutil.copytree(BOOK_DIR, book, ignore=shutil.ignore_patterns("_build", EXECUTED))
    executed, errors = {}, {}
    for nb in list_notebooks():
        dst = book / EXECUTED / nb.name
        try:
            execute_notebook(nb, dst, profile="smoke", device="cpu")
            errors[nb.name] = None
        except Exception as exc:  # reported by the per-notebook test, not here
            errors[nb.name] = exc
        executed[nb.name] = dst
    return book, executed, errors
