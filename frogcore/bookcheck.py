"""The built book as a reader's browser shows it: checks of every page in headless Chromium.

``python -m frogcore.bookcheck book/_build/html --screenshots book/_build/screenshots`` serves the HTML on
127.0.0.1 (a free port), opens every page at a 1400-px-wide viewport in Debian's Chromium driven by
Playwright (``playwright`` is in the ``dev`` extra; its own browser download cannot work offline, so the
system ``/usr/bin/chromium`` is used — :func:`ensure_chromium` installs it with apt-get when missing),
saves a full-page screenshot of each page, and reports per page (:class:`PageReport`):

* ``console`` — console messages of type *error* and uncaught page errors;
* ``images`` — images that did not load (``naturalWidth == 0``);
* ``figures`` — images in the page's content that are not inside a ``<figure>`` with a non-empty
  ``<figcaption>`` (what MyST's ``figure`` directive and myst-nb's ``glue:figure`` produce), and captions
  without an image;
* ``alt`` — content images whose alt text is missing or a file name/hash instead of a description;
* ``math`` — math the page holds (Sphinx's ``.math`` elements) that MathJax did not typeset into an
  ``mjx-container``, MathJax errors (``mjx-merror``), or math with no MathJax loaded;
* ``overflow`` — display equations, code cells, their outputs and tables wider than their column
  (``scrollWidth > clientWidth + 1``, or reaching past the right edge of the article);
* ``paths`` — build-machine paths in the page's text (``/work/``, ``/tmp/``, ``/root/``, ``/home/``,
  ``PosixPath(``, ``site-packages/``), outside code blocks written in the Markdown sources.

Every check is a function of an open Playwright page (``find_*``), so the tests run them on small pages
with one injected defect each.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CHECKS", "CHROMIUM", "CHROMIUM_ARGS", "VIEWPORT", "PageReport", "book_pages", "check_book", "check_page",
           "ensure_chromium", "find_bad_alt", "find_broken_images", "find_build_paths", "find_math_problems",
           "find_overflow", "find_uncaptioned_figures", "format_reports", "launch", "serve"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
VIEWPORT = {"width": 1400, "height": 900}
CHECKS = ("console", "images", "figures", "alt", "math", "overflow", "paths")
#: pages of a Sphinx build that are not the book's pages
SKIP_PAGES = ("genindex.html", "search.html", "py-modindex.html")
BUILD_PATHS = ("/work/", "/tmp/", "/root/", "/home/", "PosixPath(", "site-packages/")

# the part of the page a reader reads: sphinx-book-theme's article, else <main>, else the body
_ROOT_JS = "(document.querySelector('article.bd-article') || document.querySelector('main') || document.body)"


def ensure_chromium(path: str = CHROMIUM, timeout: float = 900) -> str:
    """``path`` if Chromium is there, else install Debian's ``chromium`` package (``apt-get update`` first
    when the package is unknown) and return the path. Raises ``RuntimeError`` with apt's output when that
    fails (not root, no package mirror)."""
    if Path(path).exists():
        return path
    apt = shutil.which("apt-get")
    if apt is None:
        raise RuntimeError(f"{path} is missing and apt-get is not available to install Debian's chromium")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else [])
    install = prefix + [apt, "install", "-y", "--no-install-recommends", "chromium"]
    proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        subprocess.run(prefix + [apt, "update"], capture_output=True, text=True, env=env, timeout=timeout)
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0 or not Path(path).exists():
        raise RuntimeError(f"could not install chromium with apt-get (exit {proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return path


def launch(playwright, executable: str = CHROMIUM):
    """Headless Chromium at ``executable`` (Playwright's own browser download is not used)."""
    return playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS), headless=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def serve(directory: str | os.PathLike) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 at a free port for the ``with`` block; yields the base URL."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"directory={str(directory)!r} is not a folder")
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def book_pages(html_dir: str | os.PathLike) -> list[str]:
    """Every page of a built book, as paths relative to ``html_dir`` (Sphinx's index/search pages,
    ``_static``/``_sources`` and the redirect ``index.html`` left out)."""
    html_dir = Path(html_dir)
    pages = []
    for p in sorted(html_dir.rglob("*.html")):
        rel = p.relative_to(html_dir)
        if rel.parts[0].startswith("_") or rel.name in SKIP_PAGES:
            continue
        if rel.as_posix() == "index.html" and "http-equiv=\"Refresh\"" in p.read_text(errors="replace")[:2000]:
            continue
        pages.append(rel.as_posix())
    return pages


@dataclass
class PageReport:
    """What :func:`check_page` found on one page: a list of problems per check of :data:`CHECKS`."""

    page: str
    problems: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CHECKS})
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def failed(self) -> dict[str, list[str]]:
        """The checks that found something, with their findings."""
        return {c: v for c, v in self.problems.items() if v}


# ----------------------------------------------------------------------------- the checks (page → findings)

def _wait_for_images(page, timeout_ms: int = 10_000) -> None:
    page.evaluate("""(ms) => {
        for (const img of document.images) { img.loading = 'eager'; }
        const pending = Array.from(document.images).filter(i => !i.complete)
            .map(i => new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); }));
        return Promise.race([Promise.all(pending), new Promise(r => setTimeout(r, ms))]);
    }""", timeout_ms)


def _wait_for_mathjax(page, timeout_ms: int = 15_000) -> None:
    page.evaluate("""(ms) => {
        const mj = window.MathJax;
        const p = mj && mj.startup && mj.startup.promise;
        return p ? Promise.race([p, new Promise(r => setTimeout(r, ms))]) : null;
    }""", timeout_ms)


def find_broken_images(page) -> list[str]:
    """Images that did not load: ``src`` of every ``<img>`` with ``naturalWidth == 0``."""
    _wait_for_images(page)
    return page.evaluate("""() => Array.from(document.images)
        .filter(i => !(i.complete && i.naturalWidth > 0))
        .map(i => i.getAttribute('src') || '(no src)')""")


def find_uncaptioned_figures(page) -> list[str]:
    """Content images outside a ``<figure>`` with a non-empty ``<figcaption>``, and captions without an image."""
    return page.evaluate("""(root) => {
        const out = [];
        for (const img of root.querySelectorAll('img')) {
            const fig = img.closest('figure');
            const cap = fig && fig.querySelector('figcaption');
            const src = (img.getAttribute('src') || '').split('/').pop();
            if (!fig) out.push(`image without a figure: ${src}`);
            else if (!cap || !cap.textContent.trim()) out.push(`figure without a caption: ${src}`);
        }
        for (const fig of root.querySelectorAll('figure')) {
            if (!fig.querySelector('img, svg, canvas, video, object, embed, iframe'))
                out.push(`figure without an image: ${fig.textContent.trim().slice(0, 60)}`);
        }
        return out;
    }""", page.evaluate_handle(_ROOT_JS))


def find_bad_alt(page) -> list[str]:
    """Content images whose alt text is empty, a file name or a hash rather than a description."""
    return page.evaluate("""(root) => Array.from(root.querySelectorAll('img')).filter(i => {
            const alt = (i.getAttribute('alt') || '').trim();
            return alt.length < 4 || /^[0-9a-f]{12,}$/i.test(alt) || /\\.(png|jpe?g|svg|gif)$/i.test(alt)
                   || alt === '_images' || /^<.*>$/.test(alt);
        }).map(i => `${(i.getAttribute('src') || '').split('/').pop()}: alt=${JSON.stringify(i.getAttribute('alt'))}`)
    """, page.evaluate_handle(_ROOT_JS))


def find_math_problems(page) -> list[str]:
    """Math not typeset by MathJax, MathJax errors, or math on a page without MathJax."""
    _wait_for_mathjax(page)
    return page.evaluate("""() => {
        const out = [];
        const maths = Array.from(document.querySelectorAll('.math'));
        if (maths.length && !window.MathJax) out.push(`${maths.length} math elements but MathJax is not loaded`);
        else {
            const raw = maths.filter(m => !m.querySelector('mjx-container'));
            if (raw.length) out.push(`${raw.length} of ${maths.length} math elements not typeset, e.g. `
                                     + JSON.stringify(raw[0].textContent.trim().slice(0, 60)));
        }
        for (const e of document.querySelectorAll('mjx-merror, [data-mjx-error]'))
            out.push('MathJax error: ' + (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 100));
        return out;
    }""")


def find_overflow(page) -> list[str]:
    """Display equations, code cells, outputs and tables wider than their column (visible ones only)."""
    return page.evaluate("""(root) => {
        const col = root.getBoundingClientRect();
        const sel = ['mjx-container[display="true"]', 'div.math', 'div.cell_input pre', 'div.cell_output pre',
                     'div.highlight pre', 'div.output pre', '.pst-scrollable-table-container', 'table',
                     'div.cell_output .output'];
        const out = [], seen = new Set();
        for (const el of root.querySelectorAll(sel.join(','))) {
            if (seen.has(el) || !el.offsetParent) continue;
            seen.add(el);
            if (el.tagName === 'TABLE' && el.closest('.pst-scrollable-table-container')) continue;
            const r = el.getBoundingClientRect();
            const scrolls = el.scrollWidth > el.clientWidth + 1;
            const sticksOut = r.right > col.right + 1;
            if (!scrolls && !sticksOut) continue;
            let what = el.tagName.toLowerCase() + (el.className && typeof el.className === 'string'
                       ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
            if (el.closest('.cell_input')) what = 'code cell: ' + what;
            else if (el.closest('.cell_output')) what = 'cell output: ' + what;
            else if (el.closest('.math, mjx-container')) what = 'equation: ' + what;
            const text = el.textContent.trim().replace(/\\s+/g, ' ').slice(0, 50);
            out.push(`${what} is ${Math.max(el.scrollWidth, Math.round(r.width))} px wide in a `
                     + `${Math.round(Math.min(el.clientWidth || r.width, col.width))}-px column: `
                     + JSON.stringify(text));
        }
        return out;
    }""", page.evaluate_handle(_ROOT_JS))


def find_build_paths(page, patterns: Iterable[str] = BUILD_PATHS) -> list[str]:
    """Build-machine paths in the page's text, outside code blocks of the Markdown sources (a command a
    reader may copy); cell outputs are searched."""
    return page.evaluate("""([root, patterns]) => {
        const out = [];
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        for (let n = walker.nextNode(); n; n = walker.nextNode()) {
            const el = n.parentElement;
            if (!el || el.closest('script, style')) continue;
            const block = el.closest('div[class*="highlight-"]');
            if (block && !block.closest('.cell')) continue;
            for (const p of patterns) {
                const i = n.textContent.indexOf(p);
                const around = n.textContent.slice(Math.max(0, i - 30), i + 50).trim();
                if (i >= 0) out.push(`${p}: ${JSON.stringify(around)}`);
            }
        }
        return out;
    }""", [page.evaluate_handle(_ROOT_JS), list(patterns)])


def check_page(page, url: str, *, name: str | None = None, screenshot: str | os.PathLike | None = None,
               timeout_ms: int = 30_000) -> PageReport:
    """Open ``url`` in ``page`` (a Playwright page of a :func:`launch`\\ ed browser) and run every check;
    save a full-page screenshot to ``screenshot`` if given."""
    report = PageReport(name or url)
    errors: list[str] = report.problems["console"]

    def on_console(msg):
        if msg.type == "error":
            loc = msg.location or {}
            where = f" ({loc.get('url', '').split('/')[-1]}:{loc.get('lineNumber', '')})" if loc.get("url") else ""
            errors.append(msg.text + where)

    def on_pageerror(exc):
        errors.append(f"uncaught: {exc}")

    page.on("console", on_console)
    page.on("pageerror", on_pageerror)
    try:
        page.set_viewport_size(VIEWPORT)
        page.goto(url, wait_until="load", timeout=timeout_ms)
        report.problems["images"] = find_broken_images(page)
        report.problems["math"] = find_math_problems(page)
        report.problems["figures"] = find_uncaptioned_figures(page)
        report.problems["alt"] = find_bad_alt(page)
        report.problems["overflow"] = find_overflow(page)
        report.problems["paths"] = find_build_paths(page)
        page.wait_for_timeout(200)  # late console messages
        if screenshot is not None:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            report.screenshot = Path(screenshot)
    finally:
        page.remove_listener("console", on_console)
        page.remove_listener("pageerror", on_pageerror)
    return report


def check_book(html_dir: str | os.PathLike, screenshots: str | os.PathLike | None = None,
               pages: Iterable[str] | None = None, executable: str | None = None, browser=None) -> list[PageReport]:
    """Serve ``html_dir`` and :func:`check_page` every page (:func:`book_pages`, or ``pages``), each in a fresh
    browser context (a reader's first visit); screenshots go to ``screenshots/<page path, / → __>.png``.
    ``browser``: an already launched Playwright browser (one sync Playwright per thread), else one is
    launched from ``executable`` (default: :func:`ensure_chromium`)."""
    html_dir = Path(html_dir)
    pages = list(book_pages(html_dir) if pages is None else pages)
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(serve(html_dir))
        if browser is None:
            from playwright.sync_api import sync_playwright

            p = stack.enter_context(sync_playwright())
            browser = launch(p, executable or ensure_chromium())
            stack.callback(browser.close)
        reports = []
        for rel in pages:
            context = browser.new_context(viewport=VIEWPORT)
            shot = None if screenshots is None else Path(screenshots) / (rel.replace("/", "__")[:-5] + ".png")
            try:
                reports.append(check_page(context.new_page(), base + rel, name=rel, screenshot=shot))
            finally:
                context.close()
    return reports


def format_reports(reports: Iterable[PageReport], limit: int = 5) -> str:
    """The failed checks of every page, ``limit`` findings per check."""
    lines = []
    for r in reports:
        for check, found in r.failed().items():
            lines.append(f"{r.page}: {check} ({len(found)})")
            lines += [f"    {f}" for f in found[:limit]]
            if len(found) > limit:
                lines.append(f"    … {len(found) - limit} more")
    return "\n".join(lines) if lines else "every page passes every check"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m frogcore.bookcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", nargs="?", default="book/_build/html", help="the built book (default: %(default)s)")
    parser.add_argument("--screenshots", default=None, help="folder for full-page screenshots (default: none)")
    parser.add_argument("--page", action="append", default=None, help="check only this page (repeatable)")
    args = parser.parse_args(argv)
    reports = check_book(args.html, args.screenshots, args.page)
    print(format_reports(reports))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
