"""int8-dynamic vs fp32 on ONNX Runtime CPU: p50 latency of each, the speed-up, and the accuracy, in one run.

    python scripts/bench_int8.py                                # gpt2-small, B=1, T=128, 5 rounds of 3 s each
    python scripts/bench_int8.py --model tiny --rounds 3 --min-time 1
    python scripts/bench_int8.py --profile                      # also ORT's profiler: time by op type

The two sessions are timed in alternating rounds (fp32, int8, int8, fp32, fp32, ...) with the project's timing
harness (onnxbench/benchmarks/timing.py), so that a neighbour's load on a shared machine falls on both alike; each
round's speed-up is fp32 p50 / int8 p50 of that round, and the spread over rounds is printed with the median. The
accuracy is the int8 logits judged against the fp32 logits on the same token ids by
``onnxbench.benchmarks.verify.quantized.check_quantized``.

A benchmark, not a test: it prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
from pathlib import Path

from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.measure.timing import TimingConfig, measure
from onnxbench.benchmarks.verify.quantized import check_quantized
from onnxbench.export import to_onnx
from onnxbench.export.quantize import Int8DynamicOptions, quantize_int8_dynamic
from onnxbench.models import get_preset
from onnxbench.runtimes.base import RuntimeOptions
from onnxbench.runtimes.ort import OrtCpu


def profile_by_op(artifact, feeds, iters: int, threads: int) -> dict[str, float]:
    """Mean milliseconds per inference spent in each op type, from ONNX Runtime's profiler
    (https://onnxruntime.ai/docs/performance/tune-performance/profiling-tools.html): the ``dur`` (µs) of every
    ``*_kernel_time`` node event, summed by ``args.op_name`` over ``iters`` runs after one warm-up run."""
    with tempfile.TemporaryDirectory() as tmp:
        options = RuntimeOptions(intra_op_threads=threads, extra={"enable_profiling": True,
                                                                  "profile_prefix": str(Path(tmp) / "p")})
        with OrtCpu().open(artifact, options) as session:
            run = session.prepare(feeds)
            run()
            for _ in range(iters):
                run()
            path = session.end_profiling()
        events = json.loads(Path(path).read_text())
    totals: dict[str, float] = collections.defaultdict(float)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    skip_before = runs[1]["ts"] if len(runs) > 1 else 0  # leave the warm-up run out
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= skip_before:
            totals[e["args"]["op_name"]] += e["dur"] / 1e3
    return {op: ms / iters for op, ms in sorted(totals.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-small")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per precision")
    parser.add_argument("--min-time", type=float, default=3.0, help="timed seconds per round")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's default)")
    parser.add_argument("--weight-type", default="QInt8", choices=["QInt8", "QUInt8"])
    parser.add_argument("--no-reduce-range", action="store_true")
    parser.add_argument("--per-tensor", action="store_true")
    parser.add_argument("--profile", action="store_true", help="also print ORT's time per op type")
    args = parser.parse_args()

    config = get_preset(args.model)
    fp32 = to_onnx(config, model_name=args.model)
    options = Int8DynamicOptions(weight_type=args.weight_type, reduce_range=not args.no_reduce_range,
                                 per_channel=not args.per_tensor)
    int8 = quantize_int8_dynamic(fp32, options=options)
    feeds = make_feeds(fp32.inputs, args.batch, args.seq_len, seed=0, int_high=config.vocab_size)
    timing = TimingConfig(warmup_iters=3, min_iters=10, min_time_s=args.min_time,
                          max_time_s=max(30.0, 3 * args.min_time))
    print(f"{args.model} B={args.batch} T={args.seq_len}, ORT CPU, intra-op threads {args.threads or 'default'}; "
          f"int8-dynamic options {options.to_dict()}; load average before {os.getloadavg()[0]:.2f}")
    sessions = {name: OrtCpu().open(art, RuntimeOptions(intra_op_threads=args.threads))
                for name, art in (("fp32", fp32), ("int8", int8))}
    y = {name: s.run(feeds)["logits"] for name, s in sessions.items()}
    agreement = check_quantized(y["int8"], y["fp32"])
    calls = {name: s.prepare(feeds) for name, s in sessions.items()}
    p50s: dict[str, list[float]] = {"fp32": [], "int8": []}
    for r in range(args.rounds):
        order = ("fp32", "int8") if r % 2 == 0 else ("int8", "fp32")
        for name in order:
            stats, _ = measure(calls[name], sessions[name].synchronize, timing)
            p50s[name].append(stats.latency_ms_p50)
        print(f"round {r + 1}: fp32 p50 {p50s['fp32'][-1]:.2f} ms, int8 p50 {p50s['int8'][-1]:.2f} ms, "
              f"speed-up {p50s['fp32'][-1] / p50s['int8'][-1]:.2f}x", flush=True)
    for s in sessions.values():
        s.close()
    speedups = [a / b for a, b in zip(p50s["fp32"], p50s["int8"], strict=True)]
    print(f"\nload average after {os.getloadavg()[0]:.2f}")
    for name in ("fp32", "int8"):
        v = p50s[name]
        print(f"{name}: p50 median over rounds {statistics.median(v):.2f} ms (min {min(v):.2f}, max {max(v):.2f})")
    print(f"speed-up int8 vs fp32: median {statistics.median(speedups):.2f}x "
          f"(rounds: min {min(speedups):.2f}x, max {max(speedups):.2f}x; target >= 1.5x)")
    print(f"accuracy vs fp32: cosine {agreement.cosine:.6f}, top-1 {agreement.top1_agree:.4f}, "
          f"KL mean {agreement.kl_mean:.2e}, KL max {agreement.kl_max:.2e} nats, max abs {agreement.max_abs_err:.3g}; "
          f"{'passes' if agreement.agree else 'FAILS'} the int8-dynamic thresholds")
    if args.profile:
        for name, art in (("fp32", fp32), ("int8", int8)):
            by_op = profile_by_op(art, feeds, iters=10, threads=args.threads)
            total = sum(by_op.values())
            print(f"\n{name}: kernel time by op type, ms per inference (ORT profiler, 10 runs; total {total:.2f} ms)")
            for op, ms in list(by_op.items())[:12]:
                print(f"  {op:28s} {ms:8.2f} ms  {100 * ms / total:5.1f}%")


if __name__ == "__main__":
    main()
