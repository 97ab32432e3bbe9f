"""``make demo`` run twice works: the second run replaces the first in ``runs/demo`` (the earlier run moved aside,
nothing deleted) instead of refusing the folder. The demo's flags are narrowed through ``DEMO_FLAGS`` and the
installed venv is stood in for by a script running this checkout, so that the test takes seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ("--models tiny --runtimes ort-cpu --batches 1 --seq-lens 8 --exporter torchscript --no-ceilings "
         "--no-report --min-iters 2 --min-time 0")


@pytest.mark.slow  # two runs, each a fresh fork server and an export: about a minute on a loaded 2-core machine
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_twice_replaces_the_first_run(tmp_path, cache_dir):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    launcher = venv / "bin" / "onnxbench"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m onnxbench.cli "$@"\n')
    launcher.chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: `make install` has nothing to do
    run_dir = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ONNXBENCH_CACHE": str(cache_dir)}
    command = ["make", "-s", "-C", str(ROOT), "demo", f"VENV={venv}", f"RUN_DIR={run_dir}", f"DEMO_FLAGS={FLAGS}"]
    for attempt in (1, 2):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, (attempt, proc.stdout + proc.stderr)
        assert (run_dir / "results.jsonl").is_file()
    aside = list(tmp_path.glob("demo.replaced-*"))
    assert len(aside) == 1 and (aside[0] / "results.jsonl").is_file()  # the first run, kept
