"""Greedy generation figures: TTFT, TPOT p50, decode tokens/s and TPOT against the memory-bandwidth bound.

    python scripts/bench_generate.py                         # gpt2-small fp32, torch vs ort-cpu, B in {1, 4},
                                                             # prompt 128, 64 new tokens, into runs/bench-generate
    python scripts/bench_generate.py --model tiny --batches 1 --prompt 32 --new-tokens 16 --out /tmp/gen
    python scripts/bench_generate.py --model smollm-135m --batches 1 \
        --attention decomposed,sdpa,onnx-attention,ort-fused,ort-gqa-inplace        # every attention variant

It runs the generate scenario through the matrix runner (``onnxbench run --scenario generate`` with the machine's
ceilings measured), so every figure comes from the same code as a run's rows, and then prints per (runtime,
batch): TTFT, TPOT p50, decode tokens/s, the verdict, and TPOT as a multiple of two bandwidth bounds measured
with the run's copy bandwidth (``mem_bw_gbs`` of the run's ceilings):

- weights: parameter bytes / bandwidth, the time to read the weights once (a decode step reads them all);
- step: the decode step's ``bytes_moved`` (weights + the KV cache read, docs/generation.md) / bandwidth.

The load average before and after is printed: on a shared machine the figures are only as good as the quiet.
A benchmark, not a test: it prints figures and exits 0 (1 when a row is not ok).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from onnxbench.benchmarks import MatrixSpec, run_matrix
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.models import get_preset
from onnxbench.rundir import set_aside


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gpt2-small")
    parser.add_argument("--runtimes", default="torch,ort-cpu")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--attention", default=None, help="comma-separated attention variants (default: the "
                        "matrix's)")
    parser.add_argument("--generations", type=int, default=2, help="timed generations per cell (at least); the "
                        "checked generation before them is the warm-up")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-generate"))
    args = parser.parse_args()
    if (args.out / "header.json").exists():
        set_aside(args.out)
    variants = {"attention": args.attention.split(",")} if args.attention else {}
    spec = MatrixSpec(models=[args.model], runtimes=args.runtimes.split(","), **variants,
                      batches=[int(b) for b in args.batches.split(",")], seq_lens=[args.prompt],
                      scenarios=["generate"], new_tokens=[args.new_tokens],
                      timing=TimingConfig(warmup_iters=0, min_iters=args.generations, min_time_s=0.0,
                                          max_time_s=120.0), cell_timeout_s=1800.0)
    print(f"load average before: {os.getloadavg()}", flush=True)
    summary = run_matrix(spec, args.out, ceilings=True)
    print(f"load average after: {os.getloadavg()}")
    import json

    header = json.loads((args.out / "header.json").read_text())
    bw = (header.get("ceilings") or {}).get("cpu", {}).get("mem_bw_gbs")
    weights = get_preset(args.model).n_params * 4  # fp32
    print(f"copy bandwidth {bw:.2f} GB/s; weights {weights / 1e6:.0f} MB -> weight bound "
          f"{weights / bw / 1e6:.2f} ms per step" if bw else "no bandwidth measured")
    print("| attention | runtime | B | TTFT (ms) | TPOT p50 (ms) | decode tok/s | TPOT / weight bound | "
          "TPOT / step bound | verdict | first diverging step |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    status = 0
    for row in summary.rows:
        if row["status"] != "ok":
            print(f"| {row['attention']} | {row['runtime']} | {row['batch']} | {row['status']}: {row['reason']} |")
            status = 1
            continue
        tpot = row["tpot_ms_p50"]
        weight_bound = weights / bw / 1e6 if bw else float("nan")
        step_bound = row["bytes_moved"] / bw / 1e6 if bw else float("nan")
        print(f"| {row['attention']} | {row['runtime']} | {row['batch']} | {row['ttft_ms']:.1f} | {tpot:.2f} | "
              f"{row['decode_tok_s']:.1f} | "
              f"{tpot / weight_bound:.2f} | {tpot / step_bound:.2f} | {row['verdict']} | "
              f"{row['first_divergent_step'] if row['first_divergent_step'] is not None else '-'} |")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
