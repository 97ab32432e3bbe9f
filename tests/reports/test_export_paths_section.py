"""The report's "Export paths" section (docs/export.md, "Export paths"), from the result schema alone: rows of
the recorded tiny run (tests/data/run_small) set side by side with rows derived from it for other paths, the
generation beside the prefill, a path that did not run saying why; absent from a run with one path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from onnxbench.reports import write_report
from onnxbench.reports.export_paths import paths_table
from onnxbench.reports.load import load

DATA = Path(__file__).parent.parent / "data" / "run_small"


def _derived_run(tmp_path: Path) -> Path:
    """run_small's ort-cpu rows at (1, 16) for onnxbench's export and for optimum (2x slower), each with a
    generate row (optimum's failing at step 2), and a skipped builder row naming its package."""
    run = tmp_path / "run"
    run.mkdir(parents=True)
    shutil.copy(DATA / "header.json", run / "header.json")
    rows = [json.loads(line) for line in (DATA / "results.jsonl").read_text().splitlines()]
    (base,) = [r for r in rows if r["runtime"] == "ort-cpu" and (r["batch"], r["seq_len"]) == (1, 16)]
    out = [base]
    optimum = {**base, "export_path": "optimum", "attention": "external", "cell_id": "o1",
               "latency_ms_p50": 2 * base["latency_ms_p50"], "decoder_layout": "optimum"}
    out.append(optimum)
    for row, ttft, tpot, verdict, step in ((base, 1.5, 0.5, "pass", None), (optimum, 3.0, 0.8, "FAIL", 2)):
        out.append({**row, "cell_id": row["cell_id"] + "g", "scenario": "generate", "new_tokens": 8,
                    "part": "decoder-with-past", "ttft_ms": ttft, "tpot_ms_p50": tpot, "latency_ms_p50": tpot,
                    "frac_peak_bw": 0.25, "verdict": verdict, "agree": verdict == "pass",
                    "first_divergent_step": step, "decoder_layout": row.get("decoder_layout") or "onnxbench"})
    out.append({key: None for key in base} | {k: base[k] for k in ("schema_version", "run_id", "model", "batch",
                                                                   "seq_len", "precision", "runtime", "part")}
               | {"cell_id": "b1", "export_path": "builder", "attention": "external", "opset": 0, "threads": 0,
                  "config_id": "default", "scenario": "prefill", "new_tokens": 0, "padding": 0.0,
                  "status": "skipped", "reason": "export path builder needs onnxruntime-genai-cuda"})
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))
    return run


def test_paths_sit_side_by_side_with_prefill_and_generation(tmp_path):
    table = paths_table(load(_derived_run(tmp_path)))
    assert list(table["export_path"]) == ["builder", "onnxbench", "optimum"]
    builder, ours, optimum = table.to_dict("records")
    assert optimum["prefill_ms"] == pytest.approx(2 * ours["prefill_ms"])
    assert (ours["ttft_ms"], ours["tpot_ms_p50"], ours["generate_verdict"]) == (1.5, 0.5, "pass")
    assert (optimum["generate_verdict"], optimum["first_divergent_step"]) == ("FAIL", 2)
    np.testing.assert_allclose([ours["tpot_over_bound"], optimum["tpot_over_bound"]], [4.0, 4.0])
    assert builder["prefill_verdict"] == "skipped" and "onnxruntime-genai-cuda" in builder["note"]
    assert np.isnan(builder["ttft_ms"]) and ours["note"] == ""
    generate_only = load(_derived_run(tmp_path / "g"))
    generate_only = generate_only[generate_only["scenario"] == "generate"]
    table = paths_table(generate_only)
    assert "prefill_ms" not in table and list(table["generate_verdict"]) == ["pass", "FAIL"]


def test_the_section_renders_only_for_a_run_of_several_paths(tmp_path):
    run = _derived_run(tmp_path)
    write_report(run)
    markdown = (run / "report.md").read_text()
    section = markdown.split("## Export paths", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| 1 | 16 |")]
    assert len(lines) == 3 and "optimum" in lines[2] and "FAIL" in lines[2] and "onnxruntime-genai-cuda" in lines[0]
    assert "id='export-paths'" in (run / "report.html").read_text()
    single = tmp_path / "single"
    shutil.copytree(DATA, single)
    write_report(single)
    assert "## Export paths" not in (single / "report.md").read_text()
