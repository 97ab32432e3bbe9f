"""Measure how far int8-dynamic outputs are from the fp32 reference, for clean and deliberately broken quantizations.

The figures behind the thresholds in ``onnxbench/benchmarks/verify/quantized.py`` (docs/quantization.md):

    python scripts/quant_agreement.py                                  # tiny and gpt2-small, B in {1,4}, T in {32,128}
    python scripts/quant_agreement.py --models tiny --batches 1 --seq-lens 32
    python scripts/quant_agreement.py --part attention                 # one block's attention: hidden states out

``--part attention`` quantizes the standalone attention part (its output ``attention_output`` (B, T, d_model) is an
output of the kind "other": cosine and the relative RMS error only); the unembedding cases (outliers) then do
not apply.

Cases, each judged by ``check_quantized`` against ONNX Runtime CPU running the fp32 source on the same token ids:

- ``fp32 torch``: the fp32 graph against torch eager (the noise floor, no quantization);
- ``int8 default``: :class:`Int8DynamicOptions` defaults (QInt8 weights, per-channel, reduce_range);
- ``int8 no-reduce-range`` / ``int8 QUInt8`` / ``int8 per-tensor``: one option changed (per-tensor also without
  reduce_range);
- ``fault scale xF``: the default artifact with the weight scale of one MatMul (block n_layers // 2, fc_in; w3 for
  SwiGLU; v_proj for the attention part) multiplied by F, a planted bug of the kind a broken quantizer or a wrong
  zero point/scale produces;
- ``output x100``: the default artifact with its output multiplied by 100 (a Mul appended), a wrong scale that
  cosine, top-1 and KL cannot see;
- ``outliers ...``: an fp32 graph whose unembedding weight has a few outlier elements (one per 1000 vocabulary
  columns, 50x the weight's max magnitude; its fp32 output is the reference), quantized with the defaults and
  per-tensor without reduce_range.

Prints one Markdown row per (model, case, B, T) and the worst value of each metric per (model, case). Exits 0.
"""

from __future__ import annotations

import argparse
import ast
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from onnxbench.benchmarks.inputs import make_feeds
from onnxbench.benchmarks.verify.quantized import INT8_DYNAMIC_THRESHOLDS, OTHER, VOCAB_LOGITS, check_quantized
from onnxbench.export import read_artifact, to_onnx
from onnxbench.export.quantize import Int8DynamicOptions, quantize_int8_dynamic
from onnxbench.models import build, get_preset

OUTLIER_FACTOR = 50.0


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def weight_of(model: onnx.ModelProto, scope: str) -> str:
    """Name of the constant weight of the MatMul whose torch module path is ``scope`` (dynamo name scopes)."""
    initializers = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        if node.op_type == "MatMul" and scope in scopes and node.input[1] in initializers:
            return node.input[1]
    raise LookupError(f"no MatMul with a constant weight under {scope}")


def scale_fault(quantized: Path, weight: str, factor: float, out: Path) -> Path:
    """Copy of the quantized model with the scale of ``weight`` multiplied by ``factor``."""
    model = onnx.load(str(quantized))
    for i, init in enumerate(model.graph.initializer):
        if init.name == f"{weight}_scale":
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor,
                                                                         init.name))
            onnx.save(model, str(out))
            return out
    raise LookupError(f"{quantized} has no scale for {weight}")


def plant_unembedding_outliers(source: Path, out: Path, seed: int = 0) -> Path:
    """fp32 copy whose unembedding MatMul reads its own weight E^T with outliers (the embedding lookup keeps E)."""
    model = onnx.load(str(source))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    unembed = producers["logits"]
    transpose = producers[unembed.input[1]]
    assert unembed.op_type == "MatMul" and transpose.op_type == "Transpose", (unembed.op_type, transpose.op_type)
    w = numpy_helper.to_array(inits[transpose.input[0]]).T.copy()  # (d_model, vocab)
    rng = np.random.default_rng(seed)
    columns = rng.choice(w.shape[1], size=max(1, w.shape[1] // 1000), replace=False)
    rows = rng.integers(0, w.shape[0], size=len(columns))
    w[rows, columns] = OUTLIER_FACTOR * np.abs(w).max() * rng.choice([-1.0, 1.0], size=len(columns))
    model.graph.initializer.append(numpy_helper.from_array(w.astype(np.float32), "unembed.outliers"))
    unembed.input[1] = "unembed.outliers"
    onnx.save(model, str(out))
    return out


def scale_output(path: Path, factor: float, out: Path) -> Path:
    """Copy of the model whose first output is multiplied by ``factor`` (a Mul before the output)."""
    model = onnx.load(str(path))
    name = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{name}.unscaled" if o == name else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(factor, dtype=np.float32), "output.factor"))
    model.graph.node.append(onnx.helper.make_node("Mul", [f"{name}.unscaled", "output.factor"], [name]))
    onnx.save(model, str(out))
    return out


def cases(name: str, cache: Path, work: Path, part: str = "model") -> dict[str, Callable[[], tuple[Path, Path]]]:
    """``{case: () -> (fp32 reference graph, graph under test)}``: each graph is made (quantized) when asked for."""
    config = get_preset(name)
    art = to_onnx(config, cache_dir=cache, model_name=name, part=part)
    q = lambda src, **kw: quantize_int8_dynamic(src, options=Int8DynamicOptions(**kw), cache_dir=cache).path  # noqa: E731
    mlp_in = "fc_in" if config.ffn == "gelu" else "w3"  # GPT-2's first MLP weight, or SwiGLU's up projection
    scope = f"blocks.{config.n_layers // 2}.mlp.{mlp_in}" if part == "model" else "v_proj"
    weight = weight_of(onnx.load(str(art.path), load_external_data=False), scope)
    found = {
        "fp32 torch": lambda: (art.path, art.path),
        "int8 default": lambda: (art.path, q(art)),
        "int8 no-reduce-range": lambda: (art.path, q(art, reduce_range=False)),
        "int8 QUInt8": lambda: (art.path, q(art, weight_type="QUInt8")),
        "int8 per-tensor": lambda: (art.path, q(art, per_channel=False, reduce_range=False)),
        "fault scale x1.1": lambda: (art.path, scale_fault(q(art), weight, 1.1, work / f"{name}-x1.1.onnx")),
        "fault scale x2": lambda: (art.path, scale_fault(q(art), weight, 2.0, work / f"{name}-x2.onnx")),
        "output x100": lambda: (art.path, scale_output(q(art), 100.0, work / f"{name}-x100.onnx")),
    }
    if part == "model":
        outliers = lambda: plant_unembedding_outliers(art.path, work / f"{name}-outliers.onnx")  # noqa: E731
        found["outliers int8 default"] = lambda: (outliers(), q(outliers()))
        found["outliers int8 per-tensor"] = lambda: (outliers(), q(outliers(), per_channel=False,
                                                                   reduce_range=False))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,gpt2-small")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--seq-lens", default="32,128")
    parser.add_argument("--part", default="model", choices=["model", "attention"])
    parser.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    parser.add_argument("--cache", default=None, help="export cache (default: $ONNXBENCH_CACHE or ~/.cache/onnxbench)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    seq_lens = [int(t) for t in args.seq_lens.split(",")]
    t = INT8_DYNAMIC_THRESHOLDS
    print(f"thresholds: cosine >= {t.min_cosine}, top-1 >= {t.min_top1}, KL mean <= {t.max_kl_mean}, "
          f"KL max <= {t.max_kl_max} (nats), rel RMS err <= {t.max_rel_rms_err}\n")
    print("| model | case | B | T | cosine | top-1 | KL mean | KL max | rel RMS err | max abs | pass |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    kind = VOCAB_LOGITS if args.part == "model" else OTHER
    worst: dict[tuple[str, str], list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            config = get_preset(name)
            torch_model = build(config, 0)
            if args.part == "attention":
                torch_model = torch_model.blocks[0].attn
            for case, make in cases(name, Path(args.cache) if args.cache else None, Path(tmp), args.part).items():
                if args.cases and case not in args.cases.split(","):
                    continue
                ref_path, test_path = make()
                ref, test = session(ref_path), session(test_path)
                specs = read_artifact(ref_path).inputs
                for b in batches:
                    for s in seq_lens:
                        feeds = make_feeds(specs, b, s, seed=0, int_high=config.vocab_size)
                        (x,) = feeds.values()
                        y_ref = ref.run(None, feeds)[0]
                        if case == "fp32 torch":
                            import torch

                            with torch.no_grad():
                                y = torch_model(torch.from_numpy(x)).numpy()
                        else:
                            y = test.run(None, feeds)[0]
                        a = check_quantized(y, y_ref, kind=kind)
                        top1, klm, klx = (a.top1_agree, a.kl_mean, a.kl_max) if kind == VOCAB_LOGITS else (1, 0, 0)
                        print(f"| {name} | {case} | {b} | {s} | {a.cosine:.6f} | {top1:.4f} | {klm:.2e} | {klx:.2e} | "
                              f"{a.rel_rms_err:.3g} | {a.max_abs_err:.3g} | "
                              f"{'yes' if a.agree else 'NO: ' + ', '.join(a.failures())} |", flush=True)
                        w = worst.setdefault((name, case), [1.0, 1.0, 0.0, 0.0, 0.0, set()])
                        w[:] = [min(w[0], a.cosine), min(w[1], top1), max(w[2], klm), max(w[3], klx),
                                max(w[4], a.rel_rms_err), w[5] | {f.split()[0] for f in a.failures()}]
    print("\nworst over the shapes:\n")
    print("| model | case | min cosine | min top-1 | max KL mean | max KL max | max rel RMS err | failed |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for (name, case), (cos, top1, klm, klx, rms, failed) in worst.items():
        print(f"| {name} | {case} | {cos:.6f} | {top1:.4f} | {klm:.2e} | {klx:.2e} | {rms:.3g} | "
              f"{', '.join(sorted(failed)) or 'no'} |")


if __name__ == "__main__":
    main()
