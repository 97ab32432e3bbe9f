import json

import pandas as pd
import pytest

from onnxbench.schema import COLUMNS
from tests.cli_run import run_cli


def test_cli_run_of_the_tiny_preset_writes_every_output(tmp_path, cache_dir):
    out = tmp_path / "run"
    proc = run_cli("run", "--models", "tiny", "--batches", "1,2", "--seq-lens", "8,16", "--min-time", "0.05",
                   "--runtimes", "torch,ort-cpu", "--out", str(out), "--cache-dir", str(cache_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("header.json", "results.jsonl", "results.csv", "results.parquet", "report.md", "report.html"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # torch at the cell's precision is the noise floor itself: 'floor', neither a pass nor a fail
    assert len(rows) == 8 and all(r["status"] == "ok" and r["verdict"] == ("floor" if r["runtime"] == "torch"
                                                                          else "pass") for r in rows)
    assert set(rows[0]) == set(COLUMNS)
    assert len(pd.read_parquet(out / "results.parquet")) == 8
    header = json.loads((out / "header.json").read_text())
    assert header["env"]["versions"]["torch"] and header["matrix"]["models"] == ["tiny"]


def test_cli_export_prints_the_artifact(tmp_path, cache_dir):
    proc = run_cli("export", "--preset", "tiny", "--exporter", "torchscript", "--out", str(tmp_path / "m.onnx"),
                   "--cache-dir", str(cache_dir))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m.onnx").stat().st_size > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--models", "gpt5"], "unknown preset 'gpt5'"),
        (["run", "--models", "tiny", "--seq-lens", "4096"], "exceed tiny's max_positions=128"),
        (["run", "--runtimes", "tvm"], "unknown runtime 'tvm'"),
        (["report", "."], "no results.jsonl or results.csv"),
        (["export", "--preset", "nope"], "unknown preset 'nope'"),
    ],
)
def test_bad_input_gets_one_clear_error(args, message, tmp_path):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_unwritable_output_folder_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_cli("run", "--models", "tiny", "--out", str(blocker / "run"))
    assert proc.returncode == 2 and "is not writable" in proc.stderr and "--out" in proc.stderr
