"""How many rows per second the driver can write: assemble a full row from its parts and append it to
``results.jsonl`` (flushed and fsynced per row, as the runner does), for N rows in a temporary run directory.

The driver alone writes the rows of a distributed run (docs/scaling.md), so this rate bounds how many cells per
second any number of GPUs can deliver.

    python scripts/bench_driver_rows.py [N]        # default 2000 rows; prints rows/s and ms per row
"""

from __future__ import annotations

import sys
import tempfile
import time

from onnxbench.benchmarks import MatrixSpec
from onnxbench.benchmarks.measure.timing import Timing
from onnxbench.benchmarks.rows import (
    AgreementColumns,
    CellKey,
    ModelInfo,
    Outcome,
    Placement,
    Resources,
    RunStamp,
    SessionInfo,
    Throughput,
    assemble,
    now,
)
from onnxbench.rundir import RunDir


def main(n: int = 2000) -> None:
    cell = MatrixSpec(models=["tiny"], runtimes=["ort-cpu"], batches=[1], seq_lens=[8]).build().cells[0]
    timing = Timing(3, 100, 1.0, 1.0, 1.1, 1.2, 0.9, 0.05, 0.98, 1.02, 0.05)
    parts = (CellKey.of(cell), Outcome("ok"), ModelInfo(10_000, "torch", "0" * 64, None),
             SessionInfo('{"threads": 2}', "CPUExecutionProvider", "CPUExecutionProvider", None, "cpu", 0.1),
             timing, Throughput.of(1, 8, 1.0), AgreementColumns(1e-6, 1e-5, 1.0, 1.0, 0, 1e-4, 1e-4, True),
             Resources(300.0, None), Placement("node-1", "NVIDIA H200"))
    with tempfile.TemporaryDirectory() as tmp:
        directory = RunDir(tmp)
        with directory.writer() as writer:
            t0 = time.perf_counter()
            for _ in range(n):
                writer.write(assemble(RunStamp("bench", 0.001, now()), *parts))
            elapsed = time.perf_counter() - t0
    print(f"{n} rows in {elapsed:.2f} s: {n / elapsed:.0f} rows/s, {1e3 * elapsed / n:.2f} ms per row "
          "(assemble + JSON + append + fsync)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
