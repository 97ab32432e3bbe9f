"""Repeatability benchmark: measure the same cell twice in one run and print the two medians and their ratio.

Target: the ratio within 5% of 1 on the tiny and gpt2-small presets. Also prints the timing harness's
overhead (the cost of the timing loop around a no-op) against a cell of about 1 ms.

    python scripts/bench_repeatability.py                      # tiny and gpt2-small, ort-cpu, B=1, T=128
    python scripts/bench_repeatability.py --runtime torch --min-time 3 --models tiny

A benchmark, not a test: it prints figures and exits 0. Figures measured on a shared, busy machine are noisy;
the printed coefficient of variation says how noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from onnxbench.benchmarks import Cell, Group, MatrixSpec, TimingConfig
from onnxbench.benchmarks.measure.timing import harness_overhead_ms
from onnxbench.benchmarks.rows import assemble
from onnxbench.benchmarks.run.messages import CellFinished
from onnxbench.benchmarks.run.worker import measure_group


def measure_twice(cell: Cell, spec: MatrixSpec) -> list[dict]:
    """Run ``cell`` twice on one session (the runner's own per-cell code) and return the two rows' measured
    columns."""
    source = dataclasses.replace(spec, models=[cell.model]).build().sources[cell.model]
    group = Group(source, source.artifact(cell), (cell, cell), spec)
    return [assemble(*m.measurement.parts()) for m in measure_group(group) if isinstance(m, CellFinished)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,gpt2-small")
    parser.add_argument("--runtime", default="ort-cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--min-time", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--min-iters", type=int, default=20)
    parser.add_argument("--exporter", default="dynamo")
    args = parser.parse_args()
    timing = TimingConfig(warmup_iters=5, min_iters=args.min_iters, min_time_s=args.min_time,
                          max_time_s=max(60.0, 2 * args.min_time))
    spec = MatrixSpec(exporter=args.exporter, timing=timing)
    print(f"same cell twice in one run: {args.runtime}, B={args.batch}, T={args.seq_len}, "
          f">= {args.min_iters} iterations and >= {args.min_time:g} s each")
    for model in args.models.split(","):
        cell = Cell(model, "decomposed", "fp32", 18, args.runtime, args.batch, args.seq_len)
        t0 = time.perf_counter()
        first, second = measure_twice(cell, spec)
        if first["status"] != "ok" or second["status"] != "ok":
            print(f"{model}: {first['status']} / {second['status']}: {first['reason'] or second['reason']}")
            continue
        a, b = first["latency_ms_p50"], second["latency_ms_p50"]
        ratio = b / a
        verdict = "within" if abs(ratio - 1) <= 0.05 else "OUTSIDE"
        print(f"{model:>10}: p50 run 1 {a:.4f} ms [95% CI {first['ci95_p50_lo_ms']:.4f}, "
              f"{first['ci95_p50_hi_ms']:.4f}] cov {first['cov']:.3f} n={first['iters']}; "
              f"run 2 {b:.4f} ms [{second['ci95_p50_lo_ms']:.4f}, {second['ci95_p50_hi_ms']:.4f}] "
              f"cov {second['cov']:.3f} n={second['iters']}; ratio {ratio:.4f} ({verdict} 5%) "
              f"[{time.perf_counter() - t0:.0f} s]")

    overhead = harness_overhead_ms()
    one_ms = Cell("tiny", "decomposed", "fp32", 18, "ort-cpu", 4, 128)
    row = measure_twice(one_ms, MatrixSpec(exporter=args.exporter, timing=timing))[0]
    if row["status"] == "ok":
        print(f"harness overhead {overhead * 1e3:.2f} us per timed iteration = "
              f"{100 * overhead / row['latency_ms_p50']:.4f}% of a {row['latency_ms_p50']:.3f} ms cell "
              f"(tiny, ort-cpu, B=4, T=128)")
    else:
        print(f"harness overhead {overhead * 1e3:.2f} us per timed iteration")


if __name__ == "__main__":
    main()
