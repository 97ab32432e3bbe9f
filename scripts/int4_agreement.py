"""How far int4-weight logits are from the fp32 graph's, for clean and deliberately broken quantizations.

    python scripts/int4_agreement.py tiny                 # B, T in (1, 32), (4, 128)
    python scripts/int4_agreement.py smollm-135m 128      # B = 1, T = 128 only
    python scripts/int4_agreement.py smollm-135m 128 int8 # and int8-dynamic for comparison

Reference: ONNX Runtime CPU running the fp32 graph on the same token ids (uniform over the vocabulary, seed 0).
Prints one markdown row per case: the worst cosine, top-1, KL mean and KL max over the shapes (the table of
docs/quantization.md, "Judging int4-weight"). Faults are planted in the int4 graph's block scales: the middle
MatMulNBits node's, every node's, or the last one's (the unembedding).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from onnxbench.benchmarks.verify.quantized import check_quantized
from onnxbench.export import to_onnx
from onnxbench.export.quantize import quantize_int8_dynamic
from onnxbench.export.quantize_int4 import Int4WeightOptions, quantize_int4_weight
from onnxbench.models import get_preset


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _scaled(path: Path, factor: float, which: str, out: Path) -> Path:
    """The int4 graph with the block scales of one MatMulNBits node (``mid``, ``last``) or ``all`` times factor."""
    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    targets = {"mid": [nodes[len(nodes) // 2]], "last": [nodes[-1]], "all": nodes}[which]
    inits = {i.name: i for i in model.graph.initializer}
    for node in targets:
        scales = inits[node.input[2]]
        scales.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scales) * factor, scales.name))
    target = out / f"scales_{factor}_{which}.onnx"
    onnx.save(model, str(target))
    return target


def main(name: str, seq_len: int | None = None, with_int8: bool = False) -> None:
    config = get_preset(name)
    shapes = [(1, seq_len)] if seq_len else [(1, 32), (4, 128)]
    fp32 = to_onnx(config, model_name=name)
    int4 = quantize_int4_weight(fp32).path
    out = Path(tempfile.mkdtemp())
    cases = {
        "int4 default": int4,
        "int4 asymmetric": quantize_int4_weight(fp32, options=Int4WeightOptions(is_symmetric=False)).path,
        "int4 at accuracy_level 0": quantize_int4_weight(fp32, options=Int4WeightOptions(accuracy_level=0)).path,
        "fault: one weight's scales x100": _scaled(int4, 100, "mid", out),
        "fault: every scale x1.1": _scaled(int4, 1.1, "all", out),
        "fault: every scale x2": _scaled(int4, 2, "all", out),
        "fault: the unembedding's scales x100": _scaled(int4, 100, "last", out),
    }
    if with_int8:
        cases["int8-dynamic default"] = quantize_int8_dynamic(fp32).path
    reference = _session(fp32.path)
    for label, path in cases.items():
        session, worst = _session(path), None
        for batch, length in shapes:
            ids = np.random.default_rng(0).integers(0, config.vocab_size, (batch, length)).astype(np.int64)
            r = check_quantized(session.run(None, {"input_ids": ids})[0], reference.run(None, {"input_ids": ids})[0])
            now = (r.cosine, r.top1_agree, r.kl_mean, r.kl_max)
            worst = now if worst is None else (min(worst[0], now[0]), min(worst[1], now[1]), max(worst[2], now[2]),
                                               max(worst[3], now[3]))
        print(f"| {name} | {label} | {worst[0]:.6f} | {worst[1]:.4f} | {worst[2]:.1e} | {worst[3]:.1e} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None, len(sys.argv) > 3)
