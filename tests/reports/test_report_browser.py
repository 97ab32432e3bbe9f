"""Open generated HTML in a real headless Chromium: every table and image present and loaded, plus a screenshot.

Needs the system's Chromium (Debian: `apt-get install chromium`; .ci/run installs it). Without one the tests are
skipped with that reason, unless ONNXBENCH_REQUIRE_CHROMIUM=1 (set by .ci/run), where they fail instead.
"""

import json
import os
import shutil

import pytest

from onnxbench.reports import browser, load, load_header, write_report
from onnxbench.reports.compare import compare_runs, write_comparison
from onnxbench.reports.render import build_sections
from tests.conftest import DATA
from tests.derived_runs import synthetic_run

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


def _run_with_long_texts(run):
    """run_small plus what makes the skipped-cells and environment tables wide on a CPU machine: every GPU
    runtime skipped at every shape of two models with the real no-driver reasons, a failed cell whose reason holds
    a long path without spaces, and a header with ceilings, tuning and a busy CPU."""
    src = DATA / "run_small"
    run.mkdir(parents=True)
    header = json.loads((src / "header.json").read_text())
    rows = [json.loads(line) for line in (src / "results.jsonl").read_text().splitlines()]
    no_gpu = ("no NVIDIA driver (libcuda.so.1 not found): this machine has no usable CUDA GPU; onnxruntime-gpu "
              "would silently run on the CPU")
    for r in rows[:4]:
        for runtime in ("ort-cuda", "tensorrt", "ort-trt"):
            for model in ("tiny", "gpt2-small"):
                rows.append({**r, "model": model, "runtime": runtime, "status": "skipped", "reason": no_gpu,
                             "latency_ms_p50": None})
    rows.append({**rows[0], "runtime": "torch-compile", "status": "failed", "latency_ms_p50": None,
                 "reason": "RuntimeError: /root/.cache/onnxbench/tiny-decomposed-fp32-opset18-dynamo-" + "0" * 64
                 + "/model.onnx @ torch/_inductor/compile_fx.py:1234"})
    header.update(cpu_busy_pct_at_start=63.0, tuning=[{"runtime": "ort-cpu", "best": "fused"}],
                  ceilings={"cpu": {"gemm_gflops": 80.1, "gemm_gflops_by_backend": {"torch": 80.1, "ort": 60.2},
                                    "gemm_source": "torch", "mem_bw_gbs": 9.1, "gemm_n": 1024,
                                    "copy_bytes": 128 * 2**20, "threads": 2, "errors": {}}})
    (run / "header.json").write_text(json.dumps(header))
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_skipped_cells_and_environment_fit_a_1400_px_window(tmp_path):
    """Long reasons, paths and version lists wrap inside their table instead of widening it past the page."""
    paths = write_report(_run_with_long_texts(tmp_path / "run"))
    page = browser.inspect_html(paths["html"], CHROMIUM, width=1400)
    assert page["viewport_width"] == 1400
    tables = {t["heading"]: t for t in page["tables"]}
    for heading in ("Skipped and failed cells", "Environment", "Machine ceilings"):
        assert tables[heading]["width"] <= tables[heading]["room"], (heading, tables[heading])


def _wide_agreement_run(run):
    """run_small's cells again for a second model, attention variant, precision and opset and with tuned
    thread-count configurations, one of them failing agreement: every descriptive column of the agreement table
    varies, as in a full matrix."""
    src = DATA / "run_small"
    run.mkdir(parents=True)
    header = json.loads((src / "header.json").read_text())
    base = [json.loads(line) for line in (src / "results.jsonl").read_text().splitlines()]
    rows = []
    for model, attention, precision, opset in (("tiny", "decomposed", "fp32", 18),
                                               ("gpt2-small", "ort-fused-attention", "fp16", 17)):
        for r in base:
            row = {**r, "model": model, "attention": attention, "precision": precision, "opset": opset}
            rows.append(row)
            rows.append({**row, "config_id": "fused-nospin-1t", "threads": 4})
    rows[-1].update(verdict="FAIL", agree=False, max_abs_err=0.5, required_atol=0.4, floor_ratio=900.0)
    (run / "header.json").write_text(json.dumps(header))
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_the_agreement_verdict_is_visible_at_1400_px_without_scrolling(tmp_path):
    paths = write_report(_wide_agreement_run(tmp_path / "run"))
    page = browser.inspect_html(paths["html"], CHROMIUM, width=1400)
    table = next(t for t in page["tables"] if t["heading"] == "Agreement")
    for label in ("verdict", "failed on"):
        right = table["column_right"][table["columns"].index(label)]
        assert right <= table["room"], (label, right, table["room"], table["columns"])
    assert table["fail_rows"] == 1
