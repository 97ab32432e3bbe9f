"""Faults planted in an exported ONNX graph (never in the torch module), each confined to one block, for the
tests that the agreement check fails them and locates them in that block.

Blocks are found through the exporter's module records (``onnxbench.benchmarks.verify.divergence.module_scopes``), so
the same edits apply to dynamo and TorchScript exports and to every attention variant.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

from onnxbench.benchmarks.verify.divergence import module_scopes

_ATTENTION_OPS = {("", "Attention"), ("ai.onnx", "Attention"), ("com.microsoft", "MultiHeadAttention"),
                  ("com.microsoft", "Attention")}


def _in_module(node: onnx.NodeProto, module: str) -> bool:
    return module in module_scopes(node)


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto | None:
    return next((t for t in model.graph.initializer if t.name == name), None)


def _replace_input(model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray, tag: str) -> None:
    """Give ``node`` its own copy of input ``index`` (initializers are shared across blocks after CSE)."""
    name = f"{node.input[index]}.planted_{tag}"
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    node.input[index] = name


def swap_query_heads(model: onnx.ModelProto, block: int, d_head: int, heads: tuple[int, int] = (0, 1)) -> None:
    """Swap the W^Q columns of two heads in ``block`` (in place): those heads then score with each other's
    queries. W^Q is the q_proj MatMul's initializer, stored (d_model, d_model) as (in, out) by both exporters."""
    node = next(n for n in model.graph.node if _in_module(n, f"blocks.{block}.attn.q_proj")
                and n.op_type in ("MatMul", "Gemm") and any(_initializer(model, i) for i in n.input))
    index = next(i for i, name in enumerate(node.input) if _initializer(model, name) is not None)
    weight = numpy_helper.to_array(_initializer(model, node.input[index])).copy()
    transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    w = weight.T if transposed else weight  # view: (in, out)
    a, b = (slice(h * d_head, (h + 1) * d_head) for h in heads)
    w[:, a], w[:, b] = w[:, b].copy(), w[:, a].copy()
    _replace_input(model, node, index, weight, "qswap")


def scale_layernorm_epsilon(model: onnx.ModelProto, block: int, factor: float = 1000.0,
                            module: str = "ln_2") -> None:
    """Multiply the epsilon of ``block``'s LayerNorm ``module`` (``ln_2`` by default) by ``factor`` (in place)."""
    node = next(n for n in model.graph.node if _in_module(n, f"blocks.{block}.{module}")
                and n.op_type.endswith("LayerNormalization"))
    attr = next((a for a in node.attribute if a.name == "epsilon"), None)
    if attr is None:
        node.attribute.append(onnx.helper.make_attribute("epsilon", 1e-5 * factor))
    else:
        attr.f *= factor


def softmax_scale_one_over_d(model: onnx.ModelProto, block: int, d_head: int) -> None:
    """Scale ``block``'s attention scores by 1/d_head instead of 1/sqrt(d_head) (in place).

    Fused attention ops (ONNX ``Attention``, com.microsoft ``MultiHeadAttention``) get ``scale = 1/d_head``;
    otherwise the Softmax input (scaled scores plus mask) is multiplied by a further 1/sqrt(d_head), which
    leaves masked entries at a large negative value (exp gives 0 either way).
    """
    fused = [n for n in model.graph.node if _in_module(n, f"blocks.{block}.attn") and (n.domain, n.op_type)
             in _ATTENTION_OPS]
    if fused:
        node = fused[0]
        for attr in [a for a in node.attribute if a.name == "scale"]:
            node.attribute.remove(attr)
        node.attribute.append(onnx.helper.make_attribute("scale", 1.0 / d_head))
        return
    softmax = next(n for n in model.graph.node if _in_module(n, f"blocks.{block}.attn") and n.op_type == "Softmax")
    elem_type = _elem_type(model, softmax.input[0])
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    factor = f"planted_scale_{block}"
    scaled = f"{softmax.input[0]}.planted_scale"
    model.graph.initializer.append(numpy_helper.from_array(np.array(1.0 / math.sqrt(d_head), dtype=dtype), factor))
    mul = onnx.helper.make_node("Mul", [softmax.input[0], factor], [scaled], name=f"planted_scale_mul_{block}")
    position = list(model.graph.node).index(softmax)
    model.graph.node.insert(position, mul)
    softmax.input[0] = scaled


def _elem_type(model: onnx.ModelProto, name: str) -> int:
    inferred = onnx.shape_inference.infer_shapes(model)
    for value in (*inferred.graph.value_info, *inferred.graph.output):
        if value.name == name:
            return value.type.tensor_type.elem_type
    return model.graph.output[0].type.tensor_type.elem_type


FAULTS = {
    "swap-query-heads": lambda m, block, d_head: swap_query_heads(m, block, d_head),
    "layernorm-eps-x1000": lambda m, block, d_head: scale_layernorm_epsilon(m, block),
    "softmax-scale-1/d": lambda m, block, d_head: softmax_scale_one_over_d(m, block, d_head),
}


def plant(path, out, fault: str, block: int, d_head: int):
    """Write a copy of the ONNX file ``path`` to ``out`` with ``fault`` (a key of :data:`FAULTS`) planted in
    ``block``; returns ``out``."""
    model = onnx.load(str(path))
    FAULTS[fault](model, block, d_head)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def main() -> None:
    """Print the error-to-floor ratio and the located block of every fault planted in one block of each clean
    export (ONNX Runtime CPU against the float64 torch reference):

        python -m tests.planted_faults --preset gpt2-small --block 7 --variants decomposed,ort-fused
    """
    import argparse
    import dataclasses
    import tempfile
    from pathlib import Path

    from onnxbench import runtimes
    from onnxbench.benchmarks.inputs import make_feeds
    from onnxbench.benchmarks.plan.matrix import ATTENTION_VARIANTS
    from onnxbench.benchmarks.verify.reference import TorchFloat64Reference
    from onnxbench.benchmarks.verify.verdict import judge, locate, runtime_block_states
    from onnxbench.export import read_artifact, to_onnx
    from onnxbench.models import get_preset
    from onnxbench.runtimes import RuntimeOptions

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--block", type=int, default=1)
    from onnxbench.export import VARIANTS

    gpt2 = [v for v in ATTENTION_VARIANTS if VARIANTS[v].family_reason("gpt2") is None]
    parser.add_argument("--variants", default=",".join(gpt2))
    parser.add_argument("--exporter", default="dynamo")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--shape", default="2,32", help="B,T")
    args = parser.parse_args()
    batch, seq_len = (int(v) for v in args.shape.split(","))
    print(f"{'preset':10} {'exporter':11} {'variant':14} {'prec':4} {'fault':20} {'block':>5} {'max abs':>8} "
          f"{'req atol':>8} {'ratio':>10} {'verdict':7} {'located':>7}")
    for variant in args.variants.split(","):
        config = get_preset(args.preset, attention=ATTENTION_VARIANTS[variant])
        artifact = to_onnx(config, variant=variant, exporter=args.exporter, precision=args.precision,
                           model_name=args.preset)
        reference = TorchFloat64Reference.of_artifact(artifact)
        feeds = make_feeds(artifact.inputs, batch, seq_len, seed=0, int_high=config.vocab_size)
        expected = reference.expected(feeds, args.precision)
        tol = runtimes.runtime_class("ort-cpu").tolerance(args.precision)
        with tempfile.TemporaryDirectory() as tmp:
            for fault in FAULTS:
                path = plant(artifact.path, Path(tmp) / "fault.onnx", fault, args.block, config.d_head)
                faulty = dataclasses.replace(artifact, path=path, sha256=read_artifact(path).sha256)
                with runtimes.get("ort-cpu").open(faulty) as session:
                    verdict = judge(session.run(feeds), expected, tol, reference, "ort-cpu", session.options)
                    states = runtime_block_states(session, faulty, "ort-cpu", RuntimeOptions(), feeds,
                                                  config.n_layers, tmp)
                block = locate(states, expected, tol, verdict.agreement)
                a = verdict.agreement
                print(f"{args.preset:10} {args.exporter:11} {variant:14} {args.precision:4} {fault:20} "
                      f"{args.block:>5} {a.max_abs_err:8.2e} {a.required_atol:8.2e} {a.floor.floor_ratio:10.3g} "
                      f"{verdict.verdict:7} {block!s:>7}", flush=True)


if __name__ == "__main__":
    main()
