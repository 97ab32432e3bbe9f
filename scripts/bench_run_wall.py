"""Wall time of ``onnxbench run`` at another git revision (A, "before") and in this checkout (B, "after"), measured
side by side on the same machine.

    python scripts/bench_run_wall.py --before main --rounds 3           # the default run, A B B A A B
    python scripts/bench_run_wall.py --before f64030e -- --models tiny --runtimes torch,ort-cpu
    python scripts/bench_run_wall.py --before /tmp/tree-with-a-patch     # a source tree as A

Revision A is unpacked with ``git archive`` into a temporary folder (an existing folder is taken as A's tree); both
trees run with this interpreter (``python -m onnxbench.cli run --out DIR [ARGS]``, the tree first on
``PYTHONPATH``), so that they share the installed libraries and the export cache. Exports should already be cached
(run the command once first): the figure is for a run with cached exports. The runs alternate A B B A A B ... so
that a neighbour's load drifting over time falls on both alike; the 1-minute load average before each run is
printed, and so is the CLI's own "worker start-up" figure. Per-round ratio = B / A of the two runs of that round;
the median and the range over rounds are the figure and its spread.

A benchmark, not a test: it prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def unpack(revision: str, into: Path) -> Path:
    """The tree of ``revision`` of this repository, written into the new folder ``into``."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def timed_run(tree: Path, out: Path, args: list[str]) -> tuple[float, float | None, float]:
    """(wall seconds, the CLI's worker start-up seconds or None, 1-minute load average before) of one run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "onnxbench.cli", "run", "--out", str(out), *args], cwd=tree,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"run in {tree} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    found = re.search(r"worker start-up ([0-9.]+) s", proc.stdout)
    return wall, float(found.group(1)) if found else None, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision A (e.g. main, a commit id), or a source tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("args", nargs="*", help="arguments for `onnxbench run` after --out (after a --)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_run_wall-") as tmp:
        before = Path(opts.before).resolve() if Path(opts.before).is_dir() else unpack(opts.before, Path(tmp) / "a")
        trees = {"A": before, "B": ROOT}
        walls: dict[str, list[float]] = {"A": [], "B": []}
        print(f"A = {opts.before}, B = this checkout; command: python -m onnxbench.cli run --out DIR "
              + " ".join(opts.args))
        print("| round | run | wall s | worker start-up s | load avg (1 min) before |\n|---|---|---|---|---|")
        for r in range(opts.rounds):
            for which in ("AB" if r % 2 == 0 else "BA"):
                wall, startup, load = timed_run(trees[which], Path(tmp) / f"run-{r}-{which}", opts.args)
                walls[which].append(wall)
                print(f"| {r} | {which} | {wall:.1f} | {startup if startup is not None else '?'} | {load:.2f} |",
                      flush=True)
        ratios = [b / a for a, b in zip(walls["A"], walls["B"], strict=True)]
        print(f"\nA median {statistics.median(walls['A']):.1f} s (range {min(walls['A']):.1f}-{max(walls['A']):.1f}),"
              f" B median {statistics.median(walls['B']):.1f} s (range {min(walls['B']):.1f}-{max(walls['B']):.1f})")
        print(f"B / A per round: {', '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
