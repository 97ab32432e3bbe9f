"""Measure the error-to-noise-floor ratio of clean exports: the figures behind the floor factors of
docs/agreement.md.

For every (preset, exporter, attention variant, precision, shape) and runtime (torch at the precision, ONNX Runtime
CPU with all graph optimizations and with none), prints max |y - y_fp64| (error against the float64 torch
reference), the precision's noise floor (torch at that precision against float64) and their ratio, for the logits
and, as ``blk max``, the largest ratio over the residual stream after each block. Exports come from the cache.

    python scripts/measure_noise_floor.py                       # tiny and gpt2-small, everything
    python scripts/measure_noise_floor.py --presets tiny --precisions fp32
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from onnxbench import runtimes
from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.plan.matrix import ATTENTION_VARIANTS
from onnxbench.benchmarks.verify.divergence import block_outputs_artifact
from onnxbench.benchmarks.verify.fp64 import TorchForwards, floor_ratio, noise_floor
from onnxbench.export import to_onnx
from onnxbench.models import get_preset
from onnxbench.runtimes import RuntimeOptions

VARIANTS = {"dynamo": ["decomposed", "sdpa", "onnx-attention", "ort-fused"], "torchscript": ["decomposed", "sdpa"]}
SHAPES = {"tiny": [(1, 8), (2, 32), (4, 128)], "gpt2-small": [(1, 32), (2, 128)]}


def _err(y: np.ndarray, y64: np.ndarray) -> float:
    finite = np.isfinite(y) & np.isfinite(y64)
    return float(np.max(np.abs(y[finite].astype(np.float64) - y64[finite]))) if finite.any() else float("nan")


def measure(preset: str, exporter: str, variant: str, precision: str, seed: int = 0) -> list[dict]:
    config = get_preset(preset, attention=ATTENTION_VARIANTS[variant])
    artifact = to_onnx(config, seed=seed, precision=precision, exporter=exporter, variant=variant,
                       model_name=preset)
    reference = TorchForwards.of_artifact(artifact)
    blocks_artifact, block_names = block_outputs_artifact(artifact, config.n_layers)
    rows = []
    sessions = {"torch": None}
    for label, extra in (("ort-cpu", {}), ("ort-cpu-noopt", {"graph_optimization_level": "disable"})):
        try:
            sessions[label] = runtimes.get("ort-cpu").open(blocks_artifact, RuntimeOptions(extra=extra))
        except Exception as exc:  # e.g. bf16 kernels missing in ORT CPU
            rows.append({"runtime": label, "error": f"{type(exc).__name__}: {str(exc)[:80]}"})
    for batch, seq in SHAPES[preset]:
        feeds = make_feeds(artifact.inputs, batch, seq, seed=seed, int_high=config.vocab_size)
        ref64 = reference.float64(feeds)
        floor_run = reference.at_precision(feeds, precision)
        y64 = ref64.outputs["logits"]
        floor = noise_floor(floor_run.outputs["logits"], y64, precision)
        block_floors = [noise_floor(b, b64, precision) for b, b64 in zip(floor_run.blocks, ref64.blocks, strict=True)]
        for label, session in sessions.items():
            if session is None:
                out, blocks = floor_run.outputs["logits"], floor_run.blocks
            else:
                try:
                    values = session.run(feeds)
                except Exception as exc:
                    rows.append({"runtime": label, "batch": batch, "seq": seq, "error": str(exc)[:80]})
                    continue
                out = values["logits"]
                blocks = [values[n] for n in block_names]
            err = _err(out, y64)
            block_ratios = [floor_ratio(_err(b, b64), f) for b, b64, f in zip(blocks, ref64.blocks, block_floors,
                                                                               strict=True)]
            rows.append({"runtime": label, "batch": batch, "seq": seq, "err": err, "floor": floor,
                         "ratio": floor_ratio(err, floor), "blk_max": max(block_ratios, default=float("nan")),
                         "logit_max": float(np.max(np.abs(y64)))})
    for session in sessions.values():
        if session is not None:
            session.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,gpt2-small")
    parser.add_argument("--precisions", default="fp32,fp16,bf16")
    parser.add_argument("--exporters", default="dynamo,torchscript")
    parser.add_argument("--variants", default=None, help="comma-separated subset of the attention variants")
    args = parser.parse_args()
    print(f"{'preset':10} {'exporter':11} {'variant':14} {'prec':4} {'runtime':13} {'B':>2} {'T':>4} "
          f"{'err_fp64':>9} {'floor':>9} {'ratio':>6} {'blk max':>7} {'|y|max':>6}")
    for preset, exporter, precision in itertools.product(args.presets.split(","), args.exporters.split(","),
                                                         args.precisions.split(",")):
        for variant in VARIANTS[exporter]:
            if args.variants and variant not in args.variants.split(","):
                continue
            t0 = time.perf_counter()
            try:
                rows = measure(preset, exporter, variant, precision)
            except Exception as exc:
                print(f"{preset:10} {exporter:11} {variant:14} {precision:4} export/run failed: {exc!s:.100}")
                continue
            for r in rows:
                head = f"{preset:10} {exporter:11} {variant:14} {precision:4} {r['runtime']:13}"
                if "error" in r:
                    print(f"{head} {r.get('batch', ''):>2} {r.get('seq', ''):>4} error: {r['error']}")
                else:
                    print(f"{head} {r['batch']:>2} {r['seq']:>4} {r['err']:9.2e} {r['floor']:9.2e} "
                          f"{r['ratio']:6.2f} {r['blk_max']:7.2f} {r['logit_max']:6.2f}")
            print(f"# {preset} {exporter} {variant} {precision}: {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
