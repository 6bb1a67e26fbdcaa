"""Build the book in a private folder and check some of its pages in the browser, without touching book/.

    python scripts/preview_pages.py --out /tmp/preview-x --notebook frog_4_2 --page executed/frog_4_2.html

Copies book/ (with the executed notebooks already in book/executed/) to ``<out>/book``, executes the named
notebooks there at the profile the book uses for them (``--profile default``: 4.1-4.3 at paper), builds the
HTML and runs :mod:`frogcore.bookcheck` on ``--page`` (every page if none), with 1400-px screenshots under
``<out>/screenshots``. Results are loaded from (or stored into) the repository's results/ as usual.
"""
import argparse
import shutil
import sys
from pathlib import Path

from frogcore import bookcheck
from frogcore.pipeline import BOOK_DIR, EXECUTED, NOTEBOOK_DIR, build_book, chapter_profile, execute_notebook


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--notebook", action="append", default=[], help="notebook stem to execute (repeatable)")
    ap.add_argument("--page", action="append", default=None, help="page to check, e.g. executed/frog_4_2.html")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    book = out / "book"
    if book.exists():
        shutil.rmtree(book)
    shutil.copytree(BOOK_DIR, book, ignore=shutil.ignore_patterns("_build"))
    (book / EXECUTED).mkdir(exist_ok=True)
    for stem in args.notebook:
        src = NOTEBOOK_DIR / f"{stem}.ipynb"
        execute_notebook(src, book / EXECUTED / src.name, profile=chapter_profile(src, args.profile),
                         device=args.device)
    html = build_book(args.profile, args.device, execute=False, book_dir=book, copy_sources=False)
    if args.no_check:
        return 0
    reports = bookcheck.check_book(html, out / "screenshots", args.page)
    print(bookcheck.format_reports(reports))
    print(f"screenshots: {out / 'screenshots'}")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
