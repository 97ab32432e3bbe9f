"""`onnxbench compare`: join two runs on their cell keys, flag p50 regressions beyond a threshold.

run_small is a real tiny CPU run; run_small_b is derived from it with a planted 1.5x regression (ort-cpu, batch 4,
seq_len 64), a planted 20 % improvement (torch, batch 1, seq_len 16) and a different onnxruntime-gpu version
(tests/derived_runs.py). The expected Markdown is tests/golden/compare_run_small_b.md; regenerate it with
ONNXBENCH_UPDATE_GOLDEN=1 (see tests/reports/test_report.py).
"""

import json
import shutil

import pytest
from typer.testing import CliRunner

from onnxbench.cli import app
from onnxbench.reports import load, load_header
from onnxbench.reports.compare import compare, compare_runs, env_differences, parse_threshold, render_markdown
from tests.conftest import DATA
from tests.derived_runs import derive_run_small_b
from tests.reports.test_report import check_golden

RUN_A, RUN_B = DATA / "run_small", DATA / "run_small_b"
runner = CliRunner()


def test_committed_run_b_is_derived_from_run_small(tmp_path):
    derived = derive_run_small_b(RUN_A, tmp_path / "b")
    for name in ("header.json", "results.jsonl", "README.md"):
        assert (derived / name).read_text() == (RUN_B / name).read_text(), f"regenerate {RUN_B / name}"


def test_planted_changes_are_found():
    c = compare_runs(RUN_A, RUN_B, threshold=0.05)
    reg, imp = c.regressions, c.improvements
    assert list(zip(reg.runtime, reg.batch, reg.seq_len, strict=True)) == [("ort-cpu", 4, 64)]
    assert reg.p50_change.iloc[0] == pytest.approx(0.5)
    assert reg.tok_s_change.iloc[0] == pytest.approx(1 / 1.5 - 1)
    assert list(zip(imp.runtime, imp.batch, imp.seq_len, strict=True)) == [("torch", 1, 16)]
    assert (c.cells.verdict == "unchanged").sum() == 6
    assert reg.ci_overlap.iloc[0] == "no"
    assert set(c.cells[c.cells.verdict == "unchanged"].ci_overlap) == {"yes"}
    assert c.exit_code == 1
    assert ("onnxruntime-gpu version", "1.31.1", "1.32.0") in c.env_diffs


def test_same_run_has_no_change_and_no_env_warning():
    c = compare_runs(RUN_A, RUN_A)
    assert set(c.cells.verdict) == {"unchanged"} and (c.cells.p50_change == 0).all()
    assert c.env_diffs == [] and c.exit_code == 0
    assert "Warning" not in render_markdown(c)


def test_threshold_above_the_planted_change_passes():
    assert compare_runs(RUN_A, RUN_B, threshold=0.6).exit_code == 0
    assert compare_runs(RUN_A, RUN_B, threshold=0.49).exit_code == 1


def test_status_and_agreement_changes_gate_like_slowdowns():
    a, b = load(RUN_A), load(RUN_A)
    b.loc[(b.runtime == "ort-cpu") & (b.batch == 1) & (b.seq_len == 16), "status"] = "failed"
    b.loc[(b.runtime == "ort-cpu") & (b.batch == 1) & (b.seq_len == 64), "agree"] = False
    b.loc[(b.runtime == "torch") & (b.batch == 4) & (b.seq_len == 64), "status"] = "skipped"
    b = b[~((b.runtime == "torch") & (b.batch == 4) & (b.seq_len == 16))]
    c = compare(a, b, threshold=0.05)
    by_cell = {(r.runtime, r.batch, r.seq_len): r.verdict for r in c.cells.itertuples()}
    assert by_cell[("ort-cpu", 1, 16)] == "regression: now fails"
    assert by_cell[("ort-cpu", 1, 64)] == "regression: agreement lost"
    assert by_cell[("torch", 4, 64)] == "not compared"
    assert by_cell[("torch", 4, 16)] == "not compared"
    assert c.cells.set_index(["runtime", "batch", "seq_len"]).loc[("torch", 4, 16), "status_b"] == "absent"
    assert c.exit_code == 1


def test_runs_without_newer_key_columns_still_join(tmp_path):
    """A run written before `part`/`config_id` existed joins with one that has them as defaults."""
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(RUN_A / "header.json", old)
    rows = [json.loads(line) for line in (RUN_A / "results.jsonl").read_text().splitlines()]
    (old / "results.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k not in ("config_id",)}) + "\n" for r in rows))
    c = compare_runs(old, RUN_A)
    assert len(c.cells) == len(rows) and set(c.cells.verdict) == {"unchanged"}


@pytest.mark.parametrize(("text", "value"), [("5%", 0.05), ("0.05", 0.05), (" 12.5 % ", 0.125)])
def test_parse_threshold(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["5", "abc", "-5%", ""])
def test_parse_threshold_rejects_ambiguous_or_bad_input(text):
    with pytest.raises(ValueError, match="threshold"):
        parse_threshold(text)


@pytest.mark.parametrize(("text", "fix"), [("-5%", "write e.g. 5%"), ("-0.05", "write e.g. 0.05"),
                                           ("0%", "write e.g. 5%")])
def test_a_negative_or_zero_threshold_is_named_as_such(text, fix):
    with pytest.raises(ValueError, match="must be positive") as info:
        parse_threshold(text)
    assert fix in str(info.value) and "not a number" not in str(info.value)
    cli = runner.invoke(app, ["compare", str(RUN_A), str(RUN_B), "--threshold", text])
    assert cli.exit_code == 2 and "must be positive" in cli.output


def _with_cell(df, runtime, batch, seq_len, **values):
    df = df.copy()
    at = (df.runtime == runtime) & (df.batch == batch) & (df.seq_len == seq_len)
    for column, value in values.items():
        df.loc[at, column] = value
    return df


def test_a_change_beyond_the_threshold_within_noise_does_not_fail_the_gate(tmp_path):
    """ort-cpu b4 t64: p50 +8 % (beyond 5 %) but B's median is so uncertain that the two CIs overlap."""
    a = load(RUN_A)
    p50 = a[(a.runtime == "ort-cpu") & (a.batch == 4) & (a.seq_len == 64)].latency_ms_p50.iloc[0]
    b = _with_cell(a, "ort-cpu", 4, 64, latency_ms_p50=p50 * 1.08, ci95_p50_lo_ms=p50 * 0.98,
                   ci95_p50_hi_ms=p50 * 1.4)
    c = compare(a, b, threshold=0.05)
    cell = c.cells[(c.cells.runtime == "ort-cpu") & (c.cells.batch == 4) & (c.cells.seq_len == 64)].iloc[0]
    assert cell.p50_change == pytest.approx(0.08) and cell.ci_overlap == "yes"
    assert cell.verdict == "within noise" and c.exit_code == 0 and c.regressions.empty
    assert "within noise 1" in render_markdown(c)
    # the same change with intervals that do not overlap is a regression; without intervals the threshold decides
    tight = _with_cell(b, "ort-cpu", 4, 64, ci95_p50_lo_ms=p50 * 1.07, ci95_p50_hi_ms=p50 * 1.09)
    assert compare(a, tight, threshold=0.05).exit_code == 1
    unknown = _with_cell(b, "ort-cpu", 4, 64, ci95_p50_lo_ms=None, ci95_p50_hi_ms=None)
    assert list(compare(a, unknown, threshold=0.05).regressions.runtime) == ["ort-cpu"]
    # through the CLI: exit 0, and the count of changes within noise is printed
    for name, frame in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        shutil.copy(RUN_A / "header.json", tmp_path / name)
        frame.to_json(tmp_path / name / "results.jsonl", orient="records", lines=True)
    result = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--threshold", "5%"])
    assert result.exit_code == 0, result.output
    assert "0 regression(s)" in result.stderr and "1 change(s) beyond the threshold but within noise" in result.stderr


def _pytest_benchmark_json(path, *, python, sha, node="vm", cpu=None):
    """A pytest-benchmark JSON; its CPU is run_small's unless given (the fixture run may come from either of the
    machines this VM is scheduled on)."""
    cpu = cpu or json.loads((RUN_A / "header.json").read_text())["env"]["cpu"]
    path.write_text(json.dumps({
        "machine_info": {"node": node, "python_version": python, "cpu": {"brand_raw": cpu, "count": 2},
                         "python_implementation": "CPython"},
        "commit_info": {"id": sha, "dirty": False}, "benchmarks": [], "datetime": "2026-11-29T08:00:00",
        "version": "5.1.0"}))
    return path


def test_environment_differences_ignore_absent_fields_and_sha_forms(tmp_path):
    """A run against a pytest-benchmark JSON of the same commit on the same machine: no difference."""
    run = tmp_path / "run"
    shutil.copytree(RUN_A, run)
    header = json.loads((run / "header.json").read_text())
    header["env"]["git_sha"] = "0123456789ab"
    (run / "header.json").write_text(json.dumps(header))
    sha = "0123456789ab" + "cdef" * 7
    same = _pytest_benchmark_json(tmp_path / "same.json", python="3.11.7", sha=sha)
    assert env_differences(load_header(run), load_header(same)) == []
    # real differences still show, under one name per field
    other = _pytest_benchmark_json(tmp_path / "other.json", python="3.12.1", sha="fedcba987654" + "0" * 28)
    diffs = env_differences(load_header(run), load_header(other))
    assert [d[0] for d in diffs] == ["Python", "git sha"]
    assert diffs[0] == ("Python", "3.11.7", "3.12.1")


def test_compare_markdown_matches_golden():
    c = compare(load(RUN_A), load(RUN_B), load_header(RUN_A), load_header(RUN_B), threshold=0.05)
    text = render_markdown(c)
    assert text == render_markdown(compare_runs(RUN_A, RUN_B, 0.05)), "deterministic"
    check_golden("compare_run_small_b.md", text)


def test_cli_exits_nonzero_on_the_planted_regression_and_zero_without(tmp_path):
    regressed = runner.invoke(app, ["compare", str(RUN_A), str(RUN_B), "--threshold", "5%"])
    assert regressed.exit_code == 1, regressed.output
    assert "regression" in regressed.stdout and "# onnxbench compare" in regressed.stdout
    assert "environments differ: onnxruntime-gpu version: 1.31.1 -> 1.32.0" in regressed.stderr
    same = runner.invoke(app, ["compare", str(RUN_A), str(RUN_A), "--threshold", "5%"])
    assert same.exit_code == 0, same.output
    loose = runner.invoke(app, ["compare", str(RUN_A), str(RUN_B), "--threshold", "60%", "--out", str(tmp_path)])
    assert loose.exit_code == 0, loose.output
    assert (tmp_path / "compare.md").read_text().startswith("# onnxbench compare")
    assert "data:image/png;base64," in (tmp_path / "compare.html").read_text()


def test_cli_bad_input_is_one_clear_error(tmp_path):
    bad = runner.invoke(app, ["compare", str(RUN_A), str(RUN_B), "--threshold", "5"])
    assert bad.exit_code == 2 and "write 5% or a fraction" in bad.output
    missing = runner.invoke(app, ["compare", str(RUN_A), str(tmp_path)])
    assert missing.exit_code == 2 and "is it a run directory?" in missing.output
    assert "Traceback" not in bad.output + missing.output


def test_cli_refuses_to_pass_a_gate_when_no_cell_was_compared(tmp_path):
    other = tmp_path / "other"
    shutil.copytree(RUN_A, other)
    rows = [json.loads(line) for line in (other / "results.jsonl").read_text().splitlines()]
    (other / "results.jsonl").write_text("".join(json.dumps({**r, "model": "elsewhere"}) + "\n" for r in rows))
    result = runner.invoke(app, ["compare", str(RUN_A), str(other)])
    assert result.exit_code == 2 and "share no measured cell" in result.output
    # the document printed before the exit says the status the command exits with
    assert "exit status 2" in result.stdout and "exit status 0" not in result.stdout
    c = compare_runs(RUN_A, other)
    assert c.exit_code == 2 and "exit status 2" in render_markdown(c) and "nothing was compared" in render_markdown(c)
    written = runner.invoke(app, ["compare", str(RUN_A), str(other), "--out", str(tmp_path / "cmp")])
    assert written.exit_code == 2 and "exit status 2" in (tmp_path / "cmp" / "compare.md").read_text()


def test_report_of_a_missing_directory_names_it_and_creates_nothing(tmp_path):
    missing = tmp_path / "no-such-run"
    result = runner.invoke(app, ["report", str(missing)])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not missing.exists()
