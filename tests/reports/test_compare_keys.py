"""`onnxbench compare` tells cells apart by every key column of the schema: two export paths' graphs (or two
scenarios) of one model and shape are different cells, and the tables and the error say which."""

import json
import shutil

from typer.testing import CliRunner

from onnxbench.cli import app
from onnxbench.reports.compare import compare_runs, render_markdown
from onnxbench.schema import KEY_COLUMNS
from tests.conftest import DATA

RUN = DATA / "run_small"
runner = CliRunner()


def _run(path, rows):
    shutil.copytree(RUN, path)
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows():
    return [json.loads(line) for line in (RUN / "results.jsonl").read_text().splitlines()]


def test_cells_of_two_export_paths_are_told_apart_in_the_tables(tmp_path):
    a = _run(tmp_path / "a", _rows())
    # B: run_small plus optimum's and optimum-opt's graphs of one cell (attention external), A has neither
    cell = {**_rows()[0], "attention": "external", "status": "skipped"}
    b = _run(tmp_path / "b", _rows() + [{**cell, "export_path": p, "cell_id": p} for p in ("optimum", "optimum-opt")])
    md = render_markdown(compare_runs(a, b))
    other = md.split("## Cells not measured in both runs")[1]
    header = next(line for line in other.splitlines() if line.startswith("| "))
    assert "export path" in header
    assert "| optimum |" in other and "| optimum-opt |" in other
    # compared cells of one path keep their tables without the column
    assert "export path" not in md.split("## All compared cells")[1].split("\n## ")[0]


def test_the_no_shared_cell_error_names_every_key_column(tmp_path):
    other = _run(tmp_path / "other", [{**r, "model": "elsewhere"} for r in _rows()])
    result = runner.invoke(app, ["compare", str(RUN), str(other)])
    assert result.exit_code == 2
    err = result.output.split("share no measured cell")[1]
    for key in KEY_COLUMNS:
        assert key in err, key
