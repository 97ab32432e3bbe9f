"""GPU check behind scripts/gpu_check.sh: probe, run the gpu/tensorrt tests, run the GPU matrix with the machine's
ceilings, print the tables (docs/gpu.md, "Check procedure").

Every runtime that ``onnxbench doctor`` reports ready is *required*: ``ONNXBENCH_REQUIRE_GPU`` is set to their
names for the tests and the workers, so a skip of a ready runtime is a failure, not a pass.

Exit status: 0 when nothing failed (including "no GPU runtime can run here", which is reported, not an error);
1 when a test, a cell, an agreement check or a CUDA ceiling failed, or a ready runtime produced a ``skipped``
row; 2 when a Python package the check needs is missing (named, with the install command) or for bad arguments.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: Compiling is per shape and takes tens of seconds: torch-compile-cuda gets a matrix of its own, one shape.
SLOW_TO_BUILD = ("torch-compile-cuda",)
COLUMNS = ["model", "precision", "runtime", "batch", "seq_len", "status", "latency_ms_p50", "h2d_ms", "compute_ms",
           "d2h_ms", "throughput_tok_s", "device_mem_mb", "max_abs_err", "atol", "agree", "build_s"]
#: import name -> pip name of what the check imports (the package itself is used through PYTHONPATH or
#: ``pip install --no-deps -e .``, so its dependencies are not pulled in for it).
REQUIRED = {"numpy": "numpy", "torch": "torch", "onnx": "onnx", "onnxscript": "onnxscript", "onnx_ir": "onnx-ir",
            "onnxruntime": "onnxruntime-gpu (or onnxruntime)", "pandas": "pandas"}
#: Optional: what is lost without them.
OPTIONAL = {"psutil": "CPU counts/utilisation in the run header", "pyarrow": "results.parquet",
            "tabulate": "Markdown tables here (plain text instead)", "pytest": "the gpu/tensorrt tests",
            "tensorrt": "the native tensorrt runtime"}


def missing_modules() -> tuple[list[str], list[str]]:
    """(pip names of required modules that are missing, "module: what is lost" for optional ones)."""
    required = [pip for mod, pip in REQUIRED.items() if importlib.util.find_spec(mod) is None]
    optional = [f"{mod} ({lost})" for mod, lost in OPTIONAL.items() if importlib.util.find_spec(mod) is None]
    return required, optional


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

    required, optional = missing_modules()
    if required:
        print(f"error: missing Python package(s) the GPU check needs: {', '.join(required)}; install them "
              f"(pip install {' '.join(p.split(' ')[0] for p in required)}) or use the interpreter that has them "
              "(PYTHON=...)")
        return 2
    if optional:
        print(f"note: optional package(s) missing, the check runs without: {'; '.join(optional)}")

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
        print(f"  [{'ready' if ok else 'unavailable'}] {name}: {why}")
    if not ready:
        print("\nNo GPU runtime can run on this machine: nothing to measure. What is missing is listed above "
              "(a GPU with the NVIDIA driver, then a CUDA build of torch; `pip install -e '.[gpu]'` for TensorRT).")
        return 1 if os.environ.get(probes.REQUIRE_GPU_ENV, "") not in ("", "0") else 0
    missing = [name for name in wanted if name not in ready]
    gpu_ready = [name for name in ready if runtimes.registry()[name].device == "cuda"]
    if gpu_ready:
        # Ready means required: from here on a skip of one of these is a failure (tests and rows alike).
        os.environ[probes.REQUIRE_GPU_ENV] = ",".join(gpu_ready)
        print(f"\n{probes.REQUIRE_GPU_ENV}={os.environ[probes.REQUIRE_GPU_ENV]} (a skip of these fails the check)")
    if missing:
        print(f"Measuring {', '.join(ready)}; {', '.join(missing)} will be skipped rows (reasons above).")

    status = 0
    if not args.skip_tests:
        status |= run_tests()

    from onnxbench.benchmarks import MatrixSpec, TimingConfig, run_matrix
    from onnxbench.rundir import set_aside

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    timing = TimingConfig(warmup_iters=10, min_iters=50 if args.min_time else 2, min_time_s=args.min_time,
                          max_time_s=5.0)
    # Runtimes that cannot run are in the matrix too: their rows are `skipped` with the real reason.
    fast = [r for r in wanted if r not in SLOW_TO_BUILD]
    slow = [r for r in wanted if r in SLOW_TO_BUILD]
    specs = []
    if fast:
        specs.append((args.out, MatrixSpec(
            models=models, precisions=["fp32", "fp16"], runtimes=fast,
            batches=[1, 8], seq_lens=[32, 128], shapes={"gpt2-small": {"batches": [1, 4], "seq_lens": [128]}},
            timing=timing)))
        # the generate scenario: each runtime's decode loop on device buffers (docs/generation.md)
        specs.append((args.out / "generate", MatrixSpec(
            models=["tiny"], precisions=["fp32", "fp16"], runtimes=fast, batches=[1, 4], seq_lens=[32],
            scenarios=["generate"], new_tokens=[16], paddings=[0.0, 0.25], timing=timing)))
    if slow:
        specs.append((args.out / "compiled", MatrixSpec(models=models, precisions=["fp32", "fp16"], runtimes=slow,
                                                        batches=[1], seq_lens=[128], timing=timing)))
    moved = set_aside(args.out)  # a rerun keeps the earlier run beside the new one
    if moved:
        print(f"   (moved the earlier run in {args.out} to {moved})")
    rows = []
    for i, (out, spec) in enumerate(specs):
        print(f"\n== Matrix: {len(spec.expand())} cells of {', '.join(spec.runtimes)} -> {out}", flush=True)
        summary = run_matrix(spec, out, ceilings=i == 0, on_cell=lambda cell, row: print(
            f"  {cell.model} {cell.precision} {cell.runtime} b{cell.batch} t{cell.seq_len}: {row['status']}",
            flush=True))
        rows += summary.rows
        if i == 0:
            status |= print_ceilings(json.loads((out / "header.json").read_text()).get("ceilings") or {},
                                     cuda_expected="torch-cuda" in ready)
    status |= print_table(rows, set(ready))
    print(f"\nwall time {time.perf_counter() - start:.0f} s; rows in {', '.join(str(o) for o, _ in specs)}"
          f"/results.jsonl; exit status {status}")
    return status


def run_tests() -> int:
    """The pytest tests marked gpu or tensorrt, for real (0 when they pass or pytest is absent)."""
    if importlib.util.find_spec("pytest") is None:
        print("\n== Tests: pytest is not installed here; skipping the gpu/tensorrt tests")
        return 0
    print("\n== Tests marked gpu or tensorrt", flush=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-o", "addopts=", "-p", "no:cacheprovider",
           "-m", "gpu or tensorrt", "tests/runtimes/test_gpu_runtimes.py", "tests/runtimes/test_ort.py"]
    return 1 if subprocess.run(cmd).returncode not in (0, 5) else 0  # 5: no test collected


def print_ceilings(ceilings: dict, cuda_expected: bool) -> int:
    """Print the measured ceilings; 1 when a CUDA device was expected but has none or a probe failed."""
    print("\n== Ceilings (GFLOP/s, GB/s; CUDA timed with events)")
    status = 0
    cuda = {k: v for k, v in ceilings.items() if k.startswith("cuda")}
    for device, entry in {"cpu": ceilings.get("cpu", {}), **cuda}.items():
        values = {k: round(v, 1) for k, v in entry.items() if k.startswith(("gemm_gflops", "mem_bw_gbs"))
                  and isinstance(v, float)}
        print(f"  {device} {entry.get('name', '')}: {values}")
        if entry.get("errors"):
            print(f"  {device} errors: {entry['errors']}")
            status |= 1 if device.startswith("cuda") else 0
    if cuda_expected and not any(k.startswith("cuda:") for k in cuda):
        print("  error: torch sees a GPU but no CUDA ceiling was measured")
        status = 1
    return status


def print_table(rows: list[dict], ready: set[str]) -> int:
    """Print the ok rows and the reasons of the others; 1 for a failed row, a disagreeing row or a skipped row
    of a ready runtime."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    ok = frame[frame["status"] == "ok"]
    print("\n== Results (ms; h2d/compute/d2h device time from CUDA events; agreement vs fp32 torch eager)")
    if len(ok):
        shown = ok[[c for c in COLUMNS if c in ok]]
        if importlib.util.find_spec("tabulate") is not None:
            print(shown.to_markdown(index=False, floatfmt=".4g"))
        else:
            print(shown.to_string(index=False))
    for _, r in frame[frame["status"] != "ok"].drop_duplicates(["runtime", "precision", "reason"]).iterrows():
        print(f"  {r['status']}: {r['runtime']} {r['precision']} {r['model']}: {r['reason']}")
    failed = (frame["status"] == "failed").any() or (ok["agree"] == False).any()  # noqa: E712
    skipped_ready = frame[(frame["status"] == "skipped") & frame["runtime"].isin(ready)]
    if len(skipped_ready):
        print(f"  error: {len(skipped_ready)} skipped row(s) of runtime(s) reported ready: "
              f"{sorted(set(skipped_ready['runtime']))}")
    return 1 if failed or len(skipped_ready) else 0


if __name__ == "__main__":
    sys.exit(main())
