"""Open generated HTML in a real headless Chromium: every table and image present and loaded, plus a screenshot.

Needs the system's Chromium (Debian: `apt-get install chromium`; .ci/run installs it). Without one the tests are
skipped with that reason, unless ONNXBENCH_REQUIRE_CHROMIUM=1 (set by .ci/run), where they fail instead.
"""

import os
import shutil

import pytest

from onnxbench.reports import browser, load, load_header, write_report
from onnxbench.reports.compare import compare_runs, write_comparison
from onnxbench.reports.render import build_sections

from .conftest import DATA
from .derived_runs import synthetic_run

CHROMIUM = browser.find_chromium()
if CHROMIUM is None and os.environ.get("ONNXBENCH_REQUIRE_CHROMIUM") == "1":
    raise RuntimeError("ONNXBENCH_REQUIRE_CHROMIUM=1 but no Chromium found; apt-get install chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (Debian: apt-get install chromium; "
                                                          "or set ONNXBENCH_CHROMIUM)")


def expected_tables(run):
    sections = build_sections(load(run), load_header(run), [])
    return [t for s in sections for t in s.tables if not t.frame.empty]


@pytest.mark.parametrize("source", ["run_small", "synthetic"])
def test_report_html_renders_every_table_and_image(tmp_path, source):
    run = tmp_path / "run"
    if source == "run_small":
        shutil.copytree(DATA / "run_small", run)
    else:
        synthetic_run(run)  # every optional section, a failed agreement, skipped and failed cells
    paths = write_report(run)
    html = paths["html"]
    page = browser.inspect_html(html, CHROMIUM)

    tables = expected_tables(run)
    plots = [p for p in paths if p.startswith("plot:")]
    assert page["title"].startswith("onnxbench report")
    assert len(page["tables"]) == len(tables)
    for seen, table in zip(page["tables"], tables, strict=True):
        assert seen["rows"] == len(table.frame) > 0
        assert len(seen["columns"]) >= 2
        assert seen["fail_rows"] == sum(table.fail or [])
    assert len(page["images"]) == len(plots) >= 1
    for image in page["images"]:
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, f"broken image {image}"
    if source == "synthetic":
        assert {"GPU time split", "Roofline", "Execution providers", "Tuned configurations"} <= set(page["headings"])
        assert sum(t["fail_rows"] for t in page["tables"]) >= 3  # 2 agreement failures + 1 failed cell
        return
    shot = browser.screenshot(html, html.with_name("report.png"), height=min(page["scroll_height"], 16384),
                              chromium=CHROMIUM)
    assert shot == html.with_name("report.png") and shot.stat().st_size > 10_000


def test_compare_html_renders(tmp_path):
    paths = write_comparison(compare_runs(DATA / "run_small", DATA / "run_small_b", 0.05), tmp_path)
    page = browser.inspect_html(paths["html"], CHROMIUM)
    assert [t["heading"] for t in page["tables"]] == ["Environment differences", "Regressions", "Improvements",
                                                      "All compared cells"]
    assert page["tables"][1]["fail_rows"] == 1 and page["tables"][3]["rows"] == 8
    assert len(page["images"]) == 1 and page["images"][0]["width"] > 100


def test_a_broken_image_is_detected(tmp_path):
    """The probe must be able to fail: a page with a missing image reports width 0."""
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><html><body><table><tbody><tr><td>1</td></tr></tbody></table>"
                    "<img alt='gone' src='missing.png'></body></html>")
    seen = browser.inspect_html(page, CHROMIUM)
    assert seen["images"] == [{"alt": "gone", "complete": True, "width": 0, "height": 0}]
    assert seen["tables"][0]["rows"] == 1
