"""Requests the run cannot honour are refused or said, never silently changed: a command line click cannot
parse, a missing matrix file, new tokens
without a generate cell, a variant at a precision it has no graph for, a finished run resumed, a closed pipe,
a file onnxbench did not export."""

import json
import subprocess

import pytest

from onnxbench.benchmarks import MatrixSpec
from onnxbench.cli.flags import FlagError, csv
from tests.cli_run import CLI, run_cli


def test_a_missing_matrix_file_is_bad_input_not_an_internal_error(tmp_path):
    proc = run_cli("run", "--matrix", str(tmp_path / "nosuch.toml"), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    assert "does not exist" in proc.stderr and "internal error" not in proc.stderr


def test_command_line_errors_are_one_line_naming_the_fault_and_exit_2(tmp_path):
    cases = [(("run", "--bogus-flag"), "No such option: --bogus-flag", "onnxbench run --help"),
             (("run", "--min-time", "abc"), "'--min-time'", "onnxbench run --help"),
             (("bogus",), "No such command 'bogus'", "onnxbench --help"),
             (("compare", str(tmp_path)), "Missing argument", "onnxbench compare --help")]
    for args, fault, hint in cases:
        proc = run_cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.stderr)
        assert fault in lines[0] and hint in lines[0] and "internal error" not in lines[0], (args, lines)


def test_an_empty_item_of_a_list_flag_is_refused_not_dropped():
    with pytest.raises(FlagError, match="--batches: an empty value in '1,,2'"):
        csv("1,,2", "--batches", int)
    assert csv(" 1, 2 ", "--batches", int) == [1, 2]


def test_new_tokens_without_a_generate_cell_are_refused(tmp_path):
    proc = run_cli("run", "--models", "tiny", "--runtimes", "ort-cpu", "--new-tokens", "5",
                   "--out", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    assert "new_tokens [5]" in proc.stderr and "--scenario generate" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_the_in_place_variant_in_bf16_is_a_skipped_cell_named_before_the_run():
    spec = MatrixSpec(models=["llama-tiny"], runtimes=["ort-cpu"], attention=["ort-gqa-inplace"],
                      precisions=["fp32", "bf16"], scenarios=["generate"], batches=[1], seq_lens=[8], new_tokens=[2])
    matrix = spec.build()
    reasons = {cell.precision: matrix.unrunnable_reason(cell) for cell in matrix.cells}
    assert reasons["fp32"] is None
    assert "bfloat16" in reasons["bf16"] and "ort-gqa-inplace" in reasons["bf16"]


def test_resuming_a_finished_run_says_nothing_was_left(tmp_path, cache_dir):
    out = tmp_path / "run"
    common = ["--runtimes", "ort-cpu", "--min-time", "0.01", "--no-ceilings", "--no-report"]
    proc = run_cli("run", "--models", "tiny", "--batches", "1", "--seq-lens", "8", *common, "--out", str(out),
                   "--cache-dir", str(cache_dir))
    assert proc.returncode == 0, proc.stderr
    again = run_cli("run", "--resume", str(out), "--no-ceilings", "--no-report", "--cache-dir", str(cache_dir))
    assert again.returncode == 0, again.stderr
    assert "nothing left to run" in again.stderr and "has no rows" not in again.stderr
    assert "wall time" not in again.stderr and "0/0" not in again.stderr  # no empty progress bar or timing split
    assert len((out / "results.jsonl").read_text().splitlines()) == 1


def test_a_reader_that_goes_away_is_not_an_internal_error():
    proc = subprocess.Popen([*CLI, "run", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # `onnxbench run --help | head -0`: nobody reads the help
    _, err = proc.communicate(timeout=300)
    assert err == ""  # no "internal error: BrokenPipeError", no traceback
    assert proc.returncode == 1  # click's status for a closed pipe, whoever raised it


def test_inspect_of_another_tools_file_says_so(bert_onnx):
    proc = run_cli("inspect", str(bert_onnx))
    assert proc.returncode == 0, proc.stderr
    assert "not an onnxbench export" in proc.stdout and "variant None" not in proc.stdout
    assert json.loads(run_cli("inspect", str(bert_onnx), "--json").stdout)["variant"] is None


def test_the_runtimes_flag_help_names_the_default_matrix_runtimes():
    import inspect

    from onnxbench.benchmarks import default_matrix
    from onnxbench.cli.run import run

    help_text = inspect.signature(run).parameters["runtimes"].default.help
    assert f"default: {', '.join(default_matrix().runtimes)};" in help_text
