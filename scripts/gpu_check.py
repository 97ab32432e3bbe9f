"""GPU check behind scripts/gpu_check.sh: probe, run the gpu/tensorrt tests, run the GPU matrix, print the table.

Exit status: 0 when nothing failed (including "no GPU runtime can run here", which is reported, not an error);
1 when a test, a cell or an agreement check failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

COLUMNS = ["model", "precision", "runtime", "batch", "seq_len", "status", "latency_ms_p50", "h2d_ms", "compute_ms",
           "d2h_ms", "throughput_tok_s", "max_abs_err", "atol", "agree", "build_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="run directory to write")
    parser.add_argument("--models", default="tiny,gpt2-small", help="comma-separated presets")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the pytest gpu/tensorrt tests")
    parser.add_argument("--runtimes", default=None,
                        help="runtimes to check (default: every registered runtime whose device is cuda; ort-cpu "
                        "exercises this script without a GPU)")
    parser.add_argument("--min-time", type=float, default=0.5, help="minimum timed seconds per cell")
    args = parser.parse_args()
    start = time.perf_counter()

    from onnxbench import runtimes
    from onnxbench.runtimes import probes

    if args.runtimes is None:
        wanted = tuple(name for name, cls in runtimes.registry().items() if cls.device == "cuda")
    else:
        wanted = tuple(r.strip() for r in args.runtimes.split(",") if r.strip())
    print("== GPU components")
    for name, probe in probes.report().items():
        print(f"  [{'ok' if probe.ok else 'missing'}] {name}: {probe.detail}")
    print("== GPU runtimes")
    table = runtimes.availability()
    unknown = [name for name in wanted if name not in table]
    if unknown:
        print(f"unknown runtime(s) {unknown}; registered: {', '.join(table)}")
        return 2
    ready = [name for name in wanted if table[name][0]]
    for name in wanted:
        ok, why = table[name]
        print(f"  [{'available' if ok else 'unavailable'}] {name}: {why}")
    if not ready:
        print("\nNo GPU runtime can run on this machine: nothing to measure. What is missing is listed above "
              "(a GPU with the NVIDIA driver, then `pip install -e '.[gpu]'` with a CUDA build of torch).")
        return 0
    missing = [name for name in wanted if name not in ready]
    if missing:
        print(f"\nRunning {', '.join(ready)}; skipping {', '.join(missing)} (reasons above).")

    status = 0
    if not args.skip_tests:
        status |= run_tests()

    from onnxbench.benchmarks import MatrixSpec, TimingConfig, run_matrix

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    spec = MatrixSpec(
        models=models, precisions=["fp32", "fp16"], runtimes=list(wanted),
        batches=[1, 8], seq_lens=[32, 128], shapes={"gpt2-small": {"batches": [1, 4], "seq_lens": [128]}},
        timing=TimingConfig(warmup_iters=10, min_iters=50 if args.min_time else 2, min_time_s=args.min_time,
                            max_time_s=5.0),
    )
    print(f"\n== Matrix: {len(spec.expand())} cells -> {args.out}")
    summary = run_matrix(spec, args.out, on_cell=lambda cell, row: print(
        f"  {cell.model} {cell.precision} {cell.runtime} b{cell.batch} t{cell.seq_len}: {row['status']}",
        flush=True))
    status |= print_table(summary.rows)
    print(f"\nwall time {time.perf_counter() - start:.0f} s; rows in {args.out}/results.jsonl")
    return status


def run_tests() -> int:
    """The pytest tests marked gpu or tensorrt, for real (0 when they pass or pytest is absent)."""
    try:
        import pytest  # noqa: F401
    except ImportError:
        print("\n== Tests: pytest is not installed here; skipping the gpu/tensorrt tests")
        return 0
    print("\n== Tests marked gpu or tensorrt", flush=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-o", "addopts=", "-p", "no:cacheprovider",
           "-m", "gpu or tensorrt", "tests/test_gpu_runtimes.py"]
    return 1 if subprocess.run(cmd).returncode not in (0, 5) else 0  # 5: no test collected


def print_table(rows: list[dict]) -> int:
    import pandas as pd

    frame = pd.DataFrame(rows)
    ok = frame[frame["status"] == "ok"]
    print("\n== Results (ms; h2d/compute/d2h as trtexec splits them; agreement vs fp32 torch eager)")
    if len(ok):
        print(ok[COLUMNS].to_markdown(index=False, floatfmt=".4g"))
    for _, r in frame[frame["status"] != "ok"].drop_duplicates(["runtime", "precision", "reason"]).iterrows():
        print(f"  {r['status']}: {r['runtime']} {r['precision']} {r['model']}: {r['reason']}")
    failed = (frame["status"] == "failed").any() or (ok["agree"] == False).any()  # noqa: E712
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
