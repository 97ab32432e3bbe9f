"""What the dynamo exporter and onnxscript's ONNX Runtime fusions make of a Llama-family preset (docs/export.md,
"The Llama family").

For each (attention variant, opset) in ``decomposed``/18, ``sdpa``/18, ``sdpa``/23, ``onnx-attention``/23 and
each part (``model``, ``decoder-with-past``), the preset is exported with ``onnxbench.export.to_onnx`` (seed 0,
fp32) and the line printed gives the export time, the census of the ops that show how RoPE, RMSNorm and
attention appear (from :func:`onnxbench.export.inspect.inspect_model`: ``rope``, ``norm``, ``kv_heads``, and the
attention cores), what reads the cache inputs, and the largest |ORT CPU - torch float64| of the logits
(model: B=3, T=21; decoder: (B, T, T_past) = (1, 1, 0), (3, 7, 0), (2, 1, 9), (3, 4, 11) with left padding).

With ``--ort-fusions``, the opset-18 ``sdpa`` and ``decomposed`` exports are also run through
``onnxscript.rewriter.ort_fusions.optimize_for_ort`` (on the graph as exported, before ONNX shape inference,
as ``to_onnx``'s ``ort-fused`` variant does) and the fusion counts, the fused census and the agreement printed.

An export of ``llama-tiny`` takes 5-20 s on 2 busy cores, of ``smollm-135m`` (30 blocks) 2-4 minutes.

Usage::

    python scripts/probe_llama_export.py [--preset llama-tiny] [--ort-fusions] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxbench.export import DECODER_WITH_PAST, to_onnx  # noqa: E402
from onnxbench.export.decoder_with_past import input_names  # noqa: E402
from onnxbench.export.inspect import inspect_model  # noqa: E402
from onnxbench.models import build, get_preset  # noqa: E402

CASES = [("decomposed", 18), ("sdpa", 18), ("sdpa", 23), ("onnx-attention", 23)]
STEPS = [(1, 1, 0), (3, 7, 0), (2, 1, 9), (3, 4, 11)]
SHOWN = ("Attention", "Softmax", "Expand", "Rotary", "Normalization", "MultiHead", "GroupQuery")


def _census(model: onnx.ModelProto) -> dict[str, int]:
    counts = collections.Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in model.graph.node)
    return {k.removeprefix("ai.onnx:"): v for k, v in sorted(counts.items()) if any(s in k for s in SHOWN)}


def _max_error(path: Path, config, reference, part: str) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if part == "model":
        ids = torch.randint(0, config.vocab_size, (3, 21), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            return float(np.abs(session.run(None, {"input_ids": ids.numpy()})[0] - reference(ids).numpy()).max())
    worst = 0.0
    for batch, length, past_length in STEPS:
        gen = torch.Generator().manual_seed(batch * 100 + length + past_length)
        ids = torch.randint(0, config.vocab_size, (batch, length), generator=gen)
        mask = torch.ones(batch, past_length + length, dtype=torch.int64)
        if batch > 1:
            mask[1, :2] = 0
        shape = (batch, config.n_kv_heads, past_length, config.d_head)
        past = [(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)) for _ in range(config.n_layers)]
        flat = [ids.numpy(), mask.numpy(), *[t.numpy() for kv in past for t in kv]]
        logits = session.run(None, dict(zip(input_names(config.n_layers), flat, strict=True)))[0]
        with torch.no_grad():
            expected, _ = reference(ids, mask, [(k.double(), v.double()) for k, v in past], use_cache=True)
        tokens = mask[:, past_length:].bool().numpy()
        worst = max(worst, float(np.abs(logits[tokens] - expected.numpy()[tokens]).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llama-tiny")
    parser.add_argument("--ort-fusions", action="store_true", help="also run optimize_for_ort on the opset-18 exports")
    parser.add_argument("--cache-dir", type=Path, default=None, help="export cache (default: a temporary folder)")
    args = parser.parse_args()
    config = get_preset(args.preset)
    if config.family != "llama":
        parser.error(f"{args.preset} is not a llama-family preset")
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="probe-llama-"))
    reference = build(config, seed=0).double()
    for variant, opset in CASES:
        for part in ("model", DECODER_WITH_PAST):
            start = time.perf_counter()
            artifact = to_onnx(config, variant=variant, opset=opset, part=part, cache_dir=cache_dir,
                               model_name=args.preset)
            took = time.perf_counter() - start
            info = inspect_model(artifact.path)
            census = _census(onnx.load(str(artifact.path), load_external_data=False))
            readers = artifact.metadata.get("onnxbench.past_consumers", "-")
            error = _max_error(artifact.path, config, reference, part)
            print(f"{variant} opset {artifact.opset} {part}: {took:.0f} s; {census}; RoPE {info.rope}; norm "
                  f"{info.norm}; K/V heads {info.kv_heads} ({info.kv_heads_note}); past read by {readers}; "
                  f"max |ORT - float64| {error:.2e}", flush=True)
            if args.ort_fusions and opset == 18:
                _ort_fusions(artifact.path, config, reference, part, variant)


def _ort_fusions(path: Path, config, reference, part: str, variant: str) -> None:
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    raw = onnx.load(str(path))
    del raw.graph.value_info[:]  # the exporter's shapes, not ONNX shape inference's unk__N dims
    model = ir.serde.deserialize_model(raw)
    _, counts = optimize_for_ort(model)
    fused = ir.serde.serialize_model(model)
    out = Path(tempfile.mkdtemp(prefix="probe-llama-fused-")) / "model.onnx"
    onnx.save(fused, str(out))  # weights inline: for presets under 2 GiB
    reported = {k: v for k, v in counts.items() if v}
    print(f"  optimize_for_ort ({variant}, {part}): fusions {reported}; {_census(fused)}; max |ORT - float64| "
          f"{_max_error(out, config, reference, part):.2e}", flush=True)


if __name__ == "__main__":
    main()
