"""Open a generated HTML report in headless Chromium: what the browser rendered, and a screenshot.

Uses the system's Chromium (Debian package ``chromium``; ``ONNXBENCH_CHROMIUM`` names another binary) through its
documented command-line switches ``--headless --dump-dom`` and ``--screenshot``
(https://developer.chrome.com/docs/chromium/headless). Nothing is downloaded; each call gets a fresh, empty
profile directory and no network features.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars")

#: Runs in the page after ``load``: every table (header labels, body rows) and image (loaded size), as JSON.
_PROBE = """<script>
window.addEventListener('load', () => {
  const heading = el => { let n = el; while (n && !/^H[1-3]$/.test(n.tagName)) n = n.previousElementSibling ||
    (n.parentElement && n.parentElement.tagName !== 'BODY' ? n.parentElement : null); return n ? n.textContent : ''; };
  const out = {
    title: document.title,
    headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
    tables: [...document.querySelectorAll('table')].map(t => ({
      heading: heading(t.closest('.scroll') || t),
      columns: [...t.querySelectorAll('thead th')].map(th => th.textContent),
      column_right: [...t.querySelectorAll('thead th')].map(th => Math.ceil(th.getBoundingClientRect().right -
        (t.closest('.scroll') || t.parentElement).getBoundingClientRect().left)),
      rows: t.tBodies.length ? t.tBodies[0].rows.length : 0,
      fail_rows: t.querySelectorAll('tr.fail').length,
      width: Math.ceil(t.getBoundingClientRect().width),
      room: (t.closest('.scroll') || t.parentElement).clientWidth})),
    images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,
                                             height: i.naturalHeight})),
    scroll_height: document.documentElement.scrollHeight,
    viewport_width: window.innerWidth,
  };
  const pre = document.createElement('pre');
  pre.id = 'onnxbench-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: ``$ONNXBENCH_CHROMIUM``, else the first of :data:`NAMES` on PATH."""
    override = os.environ.get("ONNXBENCH_CHROMIUM")
    if override:
        return shutil.which(override)
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(chromium: str | None) -> str:
    binary = chromium or find_chromium()
    if not binary:
        raise FileNotFoundError("no Chromium found; install it (Debian: apt-get install chromium) or set "
                                "ONNXBENCH_CHROMIUM to a Chrome/Chromium binary")
    return binary


def _run(binary: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="onnxbench-chromium-") as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{binary} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def inspect_html(path: str | Path, chromium: str | None = None, timeout: float = 60,
                 width: int | None = None) -> dict:
    """Load ``path`` in headless Chromium and report what it rendered.

    The page is loaded from a temporary copy with a probe script appended (the report itself has no scripts).
    ``width`` sets the window width in px (default: Chromium's headless default).

    Returns:
        {"title", "headings": [h2 text], "tables": [{"heading", "columns", "column_right", "rows", "fail_rows",
         "width", "room"}] (``width``: the table's rendered width in px; ``room``: the width its container offers,
         so a table wider than its room overflows it; ``column_right``: each column's right edge in px from the
         container's left, so a column whose edge is beyond ``room`` is seen only by scrolling), "images":
         [{"alt", "complete", "width", "height"}] (natural size in px; 0 for a broken image), "scroll_height":
         px, "viewport_width": px}.

    Raises:
        FileNotFoundError: no Chromium binary (see :func:`find_chromium`).
        RuntimeError: Chromium failed, or the page never fired ``load``.
        subprocess.TimeoutExpired: after ``timeout`` seconds.
    """
    binary = _chromium(chromium)
    page = Path(path).read_text(encoding="utf-8")
    probed = page.replace("</body>", _PROBE + "</body>") if "</body>" in page else page + _PROBE
    with tempfile.TemporaryDirectory(prefix="onnxbench-probe-") as tmp:
        copy = Path(tmp) / Path(path).name
        copy.write_text(probed, encoding="utf-8")
        size = [f"--window-size={width},900"] if width else []
        proc = _run(binary, ["--virtual-time-budget=10000", *size, "--dump-dom", copy.as_uri()], timeout)
    found = re.search(r'<pre id="onnxbench-probe">(.*?)</pre>', proc.stdout, re.S)
    if not found:
        raise RuntimeError(f"the page did not finish loading in Chromium (no probe output); stderr: "
                           f"{proc.stderr[-2000:]}")
    return json.loads(html.unescape(found.group(1)))


def screenshot(path: str | Path, out_png: str | Path, width: int = 1280, height: int | None = None,
               chromium: str | None = None, timeout: float = 60) -> Path:
    """Write a PNG screenshot of the page ``path`` (``width`` px wide; ``height`` defaults to the page's full
    height as measured by :func:`inspect_html`, at most 16384 px).

    Raises:
        the errors of :func:`inspect_html`; RuntimeError if no PNG was written.
    """
    binary = _chromium(chromium)
    if height is None:
        height = min(max(int(inspect_html(path, binary, timeout)["scroll_height"]), 600), 16384)
    out_png = Path(out_png).resolve()
    out_png.unlink(missing_ok=True)
    _run(binary, [f"--screenshot={out_png}", f"--window-size={width},{height}", Path(path).resolve().as_uri()],
         timeout)
    if not out_png.is_file() or out_png.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise RuntimeError(f"Chromium wrote no screenshot to {out_png}")
    return out_png
