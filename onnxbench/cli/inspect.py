"""``onnxbench inspect`` (what an ONNX file holds) and ``onnxbench doctor`` (what can run here)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from . import flags
from .console import app, console, fail


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="an ONNX file"),
    seq_lens: str = typer.Option("1,32,128,512,1024", help="sequence lengths for FLOPs per token"),
    as_json: bool = typer.Option(False, "--json", help="print the inspection as JSON"),
) -> None:
    """Opset, op histogram, attention nodes per block, parameters and FLOPs per token of an ONNX model."""
    from ..export.inspect import inspect_model

    if not model.is_file():
        fail(f"{model} does not exist (give the path of an .onnx file)")
    try:
        info = inspect_model(model, tuple(flags.csv(seq_lens, "--seq-lens", int)))
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        print(info.to_json())
        return
    domains = ", ".join(f"{k} {v}" for k, v in info.opsets.items())
    made = (f"variant {info.variant}, part {info.part}, precision {info.precision}" if info.variant else
            "not an onnxbench export (no variant, part or precision recorded)")
    console.print(f"[bold]{info.path}[/]: opset {info.opset} ({domains}), "
                  f"IR {info.ir_version}, {info.n_nodes} nodes; {made}", highlight=False)
    console.print(f"inputs {info.inputs}; outputs {info.outputs}", highlight=False)
    console.print(f"parameters (initializer elements): {info.n_params:,}  [dim]({info.n_params_note})[/]",
                  highlight=False)
    console.print(f"RoPE: {info.rope}; norm: {info.norm}; K/V heads: {info.kv_heads} ({info.kv_heads_note})",
                  highlight=False)
    if info.n_params_config:
        console.print(f"parameters ({info.n_params_config_label}): {info.n_params_config:,}", highlight=False)
    ops = Table("op", "count", title="op histogram")
    for op, n in info.op_histogram.items():
        ops.add_row(op, str(n))
    console.print(ops)
    blocks = Table("block", "attention cores", "attention nodes", title=f"attention per block ({info.block_source})")
    for block, hist in info.attention_blocks.items():
        blocks.add_row(block, ", ".join(info.attention_cores.get(block, [])) or "-",
                       ", ".join(f"{op.split(':')[-1]} x{n}" for op, n in hist.items()))
    console.print(blocks)
    if info.flops_per_token:
        flops = Table("seq_len", "FLOPs per token", "GFLOPs per sequence", title="FLOPs (" + info.flops_note + ")")
        for t, f in info.flops_per_token.items():
            flops.add_row(str(t), f"{f:.4g}", f"{f * t / 1e9:.4g}")
        console.print(flops)
    else:
        console.print(f"FLOPs: not available ({info.flops_note})")


@app.command()
def doctor() -> None:
    """List every runtime with its device and whether it can run here, and why not; then the GPU components
    probed."""
    from rich.markup import escape

    from .. import runtimes
    from ..runtimes import probes

    table = Table("runtime", "device", "available", "detail")
    for name, cls in runtimes.registry().items():
        ok, why = cls.availability()
        table.add_row(name, cls.device, "[green]yes[/]" if ok else "[red]no[/]", escape(why))
    console.print(table)
    components = Table("GPU component", "found", "detail")
    for name, probe in probes.report().items():
        components.add_row(name, "[green]yes[/]" if probe.ok else "[red]no[/]", escape(probe.detail))
    console.print(components)
