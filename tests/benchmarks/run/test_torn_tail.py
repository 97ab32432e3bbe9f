"""A writer killed mid-line leaves a torn last line in results.jsonl: reopening the file to append (``--resume``)
repairs it first and says how many bytes it dropped, the reader leaves it out and says so, and a corrupt line in
the middle of the file is named, never dropped in silence."""

import json
import shutil

import pandas as pd

from onnxbench.benchmarks import MatrixSpec, read_rows, run_matrix
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.reports import load, write_report
from onnxbench.rundir import RESULTS, RunDir
from tests.conftest import DATA

RUN = DATA / "run_small"


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_tail_torn_at_every_byte_is_repaired_before_appending(tmp_path, capsys):
    """Tear the last row at every byte offset (from nothing of it to all of it but the newline), append a new
    row as a resumed run does, read: every complete row once, the new row, no line joined to a fragment."""
    src = (RUN / RESULTS).read_bytes()
    lines = src.splitlines(keepends=True)
    head, last = b"".join(lines[:-1]), lines[-1]
    complete = _rows(RUN / RESULTS)
    new = {**complete[-1], "cell_id": "re-measured", "latency_ms_p50": 1.25}
    for cut in range(len(last)):  # cut == len(last) - 1: the whole row without its newline
        run = tmp_path / f"cut{cut}"
        run.mkdir()
        (run / RESULTS).write_bytes(head + last[:cut])
        whole_row = cut == len(last) - 1
        kept = complete if whole_row else complete[:-1]
        assert read_rows(run) == kept, cut
        capsys.readouterr()
        with RunDir(run).writer() as writer:
            dropped = 0 if whole_row or cut == 0 else cut
            assert writer.dropped_bytes == dropped, cut
            writer.write(new)
        err = capsys.readouterr().err
        if dropped:
            assert f"dropped its torn last line ({cut} bytes" in err and str(run / RESULTS) in err, (cut, err)
        else:
            assert "torn" not in err, (cut, err)
        text = (run / RESULTS).read_text()
        assert text.endswith("\n") and all(line.startswith("{") for line in text.splitlines()), cut
        assert read_rows(run) == kept + [new], cut
        ids = [r["cell_id"] for r in read_rows(run)]
        assert len(ids) == len(set(ids)), cut


def test_the_reader_says_it_left_out_a_torn_last_line(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    data = (run / RESULTS).read_bytes()
    (run / RESULTS).write_bytes(data[:-40])
    rows = read_rows(run)
    err = capsys.readouterr().err
    assert len(rows) == len(_rows(RUN / RESULTS)) - 1
    assert f"{run / RESULTS}: line {len(rows) + 1}" in err and "torn" in err and "left out" in err
    # the table files and the report are written from the rows read, and the report says one was left out
    RunDir(run).write_tables()
    assert len(pd.read_csv(run / "results.csv")) == len(rows) == len(load(run))
    text = write_report(run)["markdown"].read_text()
    assert "torn" in text.split("## ")[0], "the report's warnings must name the torn line"


def test_a_corrupt_line_in_the_middle_is_named_not_dropped_silently(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    lines = (run / RESULTS).read_text().splitlines(keepends=True)
    lines[2] = "this is not a row\n"
    (run / RESULTS).write_text("".join(lines))
    rows = read_rows(run)
    err = capsys.readouterr().err
    assert len(rows) == len(lines) - 1
    assert f"{run / RESULTS}: line 3 is not a JSON row" in err
    text = write_report(run)["markdown"].read_text()
    assert "line 3 is not a JSON row" in text.split("## ")[0]


def test_a_row_joined_to_a_torn_line_by_an_earlier_resume_is_read_back(tmp_path, capsys):
    """Runs written before the repair existed hold a torn row with the next row appended to it on one line: the
    reader recovers the appended row and names the line."""
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    lines = (run / RESULTS).read_text().splitlines(keepends=True)
    joined = lines[-2][:57] + lines[-1]
    (run / RESULTS).write_text("".join(lines[:-2]) + joined)
    rows = read_rows(run)
    err = capsys.readouterr().err
    assert rows == _rows(RUN / RESULTS)[:-2] + _rows(RUN / RESULTS)[-1:]
    assert f"line {len(lines) - 1}" in err and "57 bytes" in err


def test_resume_measures_again_the_cell_whose_row_was_torn(tmp_path, cache_dir, capsys):
    spec = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], batches=[1], seq_lens=[8, 16],
                      timing=TimingConfig(warmup_iters=1, min_iters=3, min_time_s=0.02))
    run_matrix(spec, tmp_path, cache_dir=cache_dir, isolate=False)
    first = read_rows(tmp_path)
    assert [r["seq_len"] for r in first] == [8, 16]
    data = (tmp_path / RESULTS).read_bytes()
    (tmp_path / RESULTS).write_bytes(data[: len(data) - 100])  # killed while writing the second row
    capsys.readouterr()
    summary = run_matrix(spec, tmp_path, cache_dir=cache_dir, isolate=False, resume=True)
    err = capsys.readouterr().err
    assert "dropped its torn last line" in err
    assert [r["seq_len"] for r in summary.rows] == [16], "the torn cell must run again, and only it"
    rows = read_rows(tmp_path)
    assert sorted(r["seq_len"] for r in rows) == [8, 16] and rows[0] == first[0]
    assert all(line.startswith("{") for line in (tmp_path / RESULTS).read_text().splitlines())
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2 == len(pd.read_parquet(tmp_path / "results.parquet"))
