"""How close each CPU runtime gets to this machine's measured limits, for gpt2-small prefill.

Runs the real matrix (``onnxbench.benchmarks.run_matrix``) for gpt2-small, fp32, decomposed attention, batch 1,
seq_len 128 and 512, under torch eager, torch-compile (Inductor) and ort-cpu, tuning ort-cpu (a ``tuned`` row: the
best of ``onnxbench.benchmarks.measure.tune.grid`` at each shape; ``--tune-torch`` tunes torch eager too), after
measuring
the machine's ceilings with a larger GEMM than ``onnxbench run`` uses. Prints per seq_len: p50 of torch eager,
torch-compile, ort-cpu default and ort-cpu tuned, their speed-ups over torch eager, achieved GFLOP/s and the
fraction of the measured fp32 GEMM peak, and checks the targets (best ort-cpu >= 1.5x torch eager; >= 70% of the
GEMM peak at seq_len 512). The ceilings are probed at the start and, by the runner, again at the end of the
run
(``onnxbench.benchmarks.measure.ceilings.reprobe``): the printed fractions use the higher, as the run's rows do. Exit
status
0 whatever the figures: targets are reported, not asserted.

Usage::

    python scripts/bench_cpu_peak.py [--seq-lens 128,512] [--out runs/bench_cpu_peak] [--min-iters 5]
                                     [--no-compile] [--gemm-n 2048]

The torch-compile cells compile gpt2-small once per shape (minutes on 2 cores; the compile time is in the
``build_s`` column and printed, never in the latency).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from onnxbench.benchmarks import MatrixSpec, TimingConfig, run_matrix
from onnxbench.benchmarks.measure.ceilings import measure_ceilings
from onnxbench.rundir import set_aside

TARGET_SPEEDUP = 1.5
TARGET_FRAC_PEAK = 0.70


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-lens", default="128,512")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_cpu_peak"))
    parser.add_argument("--min-iters", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per cell at its shape")
    parser.add_argument("--gemm-n", type=int, default=2048, help="side of the square GEMM of the ceiling")
    parser.add_argument("--no-compile", action="store_true", help="leave torch-compile out (it compiles per shape)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--tune-torch", action="store_true", help="tune torch eager's threads/grad mode too")
    args = parser.parse_args(argv)
    seq_lens = [int(t) for t in args.seq_lens.split(",")]
    names = ["torch", "ort-cpu"] + ([] if args.no_compile else ["torch-compile"])

    t0 = time.perf_counter()
    probe = TimingConfig(warmup_iters=2, min_iters=10, min_time_s=1.0, max_time_s=5.0)
    ceilings = measure_ceilings(gemm_n=args.gemm_n, timing=probe)
    cpu = ceilings["cpu"]
    print(f"ceilings ({ceilings['measure_s']:.1f} s): fp32 GEMM n={args.gemm_n} "
          + ", ".join(f"{k} {v:.1f}" for k, v in cpu["gemm_gflops_by_backend"].items())
          + f" GFLOP/s -> peak {cpu['gemm_gflops']:.1f} ({cpu['gemm_source']}); copy bandwidth "
          f"{cpu['mem_bw_gbs']:.2f} GB/s; torch threads {cpu['threads']}", flush=True)

    spec = MatrixSpec(models=["gpt2-small"], runtimes=names, batches=[1], seq_lens=seq_lens,
                      timing=dataclasses.replace(TimingConfig(), warmup_iters=args.warmup, min_iters=args.min_iters,
                                                 min_time_s=args.min_time, max_time_s=60.0))

    def progress(cell, row):
        p50 = row.get("latency_ms_p50")
        print(f"  {cell.runtime:14s} {cell.config_id:8s} T={cell.seq_len:4d} {row['status']:7s} "
              + (f"p50 {p50:9.1f} ms  build {row['build_s']:.1f} s" if p50 else row.get("reason") or ""),
              flush=True)

    moved = set_aside(args.out)  # a fixed default --out: keep an earlier run beside the new one
    if moved:
        print(f"moved the earlier run in {args.out} to {moved}")
    summary = run_matrix(spec, args.out, cache_dir=args.cache_dir, on_cell=progress, ceilings=ceilings,
                         tune=["ort-cpu"] + (["torch"] if args.tune_torch else []))
    rows = {(r["runtime"], r["config_id"], r["seq_len"]): r for r in summary.rows if r["status"] == "ok"}
    header = json.loads((args.out / "header.json").read_text())
    for entry in header.get("tuning", []):
        for shape, chosen in entry["best"].items():
            p50 = {name: per_shape[shape] for name, per_shape in entry["p50_ms"].items() if shape in per_shape}
            print(f"tune {entry['runtime']} {shape}: {chosen} ({entry['why'][shape]}); search p50 ms "
                  + ", ".join(f"{k} {v:.0f}" for k, v in sorted(p50.items(), key=lambda kv: kv[1])))
        if entry["errors"]:
            print(f"tune {entry['runtime']}: errors {entry['errors']}")

    # The runner probed the ceilings again when the run ended and kept the higher (a probe that met contention
    # reads low): read every cell against that bound, as the rows' frac_peak_* columns are.
    final = header["ceilings"]
    after = final["probes"][-1]["cpu"]
    peak = final["cpu"]["gemm_gflops"]
    print(f"ceilings again after the run: GEMM peak {after['gemm_gflops']:.1f} GFLOP/s, copy "
          f"{after['mem_bw_gbs']:.2f} GB/s; % peak below is against {peak:.1f} GFLOP/s (the highest probe)")
    print(f"\ngpt2-small fp32 prefill, batch 1, {cpu['threads']} threads, GEMM peak {peak:.1f} "
          "GFLOP/s (on a shared machine figures are indicative)")
    print(f"{'T':>4} {'runtime':22s} {'p50 ms':>9} {'x eager':>8} {'GFLOP/s':>8} {'% peak':>7} {'build s':>8}")
    verdicts = []
    for t in seq_lens:
        eager = rows.get(("torch", "default", t))
        lines = [("torch eager", eager), ("torch eager tuned", rows.get(("torch", "tuned", t))),
                 ("torch-compile", rows.get(("torch-compile", "default", t))),
                 ("ort-cpu default", rows.get(("ort-cpu", "default", t))),
                 ("ort-cpu tuned", rows.get(("ort-cpu", "tuned", t)))]
        for label, r in lines:
            if r is None:
                print(f"{t:>4} {label:22s} {'-':>9}")
                continue
            speedup = eager["latency_ms_p50"] / r["latency_ms_p50"] if eager else float("nan")
            print(f"{t:>4} {label:22s} {r['latency_ms_p50']:9.1f} {speedup:8.2f} {r['achieved_gflops']:8.2f} "
                  f"{100 * r['achieved_gflops'] / peak:6.1f}% {r['build_s']:8.1f}")
        ort = [r for r in (rows.get(("ort-cpu", "default", t)), rows.get(("ort-cpu", "tuned", t))) if r]
        if eager and ort:
            best = min(ort, key=lambda r: r["latency_ms_p50"])
            speedup = eager["latency_ms_p50"] / best["latency_ms_p50"]
            verdicts.append(f"T={t}: best ort-cpu {speedup:.2f}x torch eager (target >= {TARGET_SPEEDUP}x: "
                            f"{'met' if speedup >= TARGET_SPEEDUP else 'MISSED'})")
            if t == 512:
                best_any = max((r for r in rows.values() if r["seq_len"] == t), key=lambda r: r["achieved_gflops"])
                frac = best_any["achieved_gflops"] / peak
                verdicts.append(f"T={t}: best fraction of GEMM peak {100 * frac:.1f}% ({best_any['runtime']} "
                                f"{best_any['config_id']}; target >= {100 * TARGET_FRAC_PEAK:.0f}%: "
                                f"{'met' if frac >= TARGET_FRAC_PEAK else 'MISSED'})")
    print("\n".join(verdicts))
    print(f"total {time.perf_counter() - t0:.0f} s; run directory {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
