"""Which ONNX opsets each exporter really produces for each attention variant, measured on this install.

For every exporter (``dynamo``, ``torchscript``), attention variant (``onnxbench.export.VARIANTS``) and opset in
``--opsets`` (default 7-26), the ``tiny`` preset (fp32, full model) is exported at that opset exactly as
``onnxbench export`` does it (``onnxbench.export.onnx_export._torch_export`` + the variant's post-export steps),
without the variant's opset remapping, and the outcome is one of:

- ``ok``: the file's default-domain ``opset_import`` is the opset asked for, the graph holds the variant's
  attention once per block (``verify_variant``), ``onnx.checker`` accepts it, and ONNX Runtime's CPU EP loads it
  and agrees with torch eager (atol = rtol = 1e-4 on the logits, B=2, T=5);
- ``ok, ORT cannot load``: as ``ok`` but ONNX Runtime's CPU EP refuses the opset (the exporter still produced it);
- ``produces opset N``: the exporter wrote another opset (dynamo exports at its lowest implemented opset and
  tries a version conversion that may fail; the failure is only logged);
- ``no <variant> attention``: the graph lacks the variant's attention core at this opset;
- ``error: ...``: the exporter raised.

``--write PATH`` stores the table as JSON, merged into what PATH already holds, so a long measurement can be
split into several runs (``onnxbench/export/opsets.json`` is what ``to_onnx`` and the matrix validation read: a
variant is *supported* at an opset whose outcome is ``ok`` or ``ok, ORT cannot load``). The Markdown table
printed (over everything in PATH) goes into ``docs/export.md``. A dynamo export of ``tiny`` takes 5-30 s on 2
busy CPU cores, a TorchScript one about 1 s.

Usage::

    python scripts/measure_opsets.py [--opsets 7-26] [--exporters dynamo,torchscript] [--variants ...]
                                     [--write onnxbench/export/opsets.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from onnxbench.export import EXPORTERS, VARIANTS, VariantMismatch
from onnxbench.export.onnx_export import EXAMPLE_BATCH, EXAMPLE_SEQ, _torch_export, _versions
from onnxbench.export.opsets import describe
from onnxbench.export.variants import finish_variant
from onnxbench.models import build, get_preset

SUPPORTED = ("ok", "ok, ORT cannot load")


def probe(exporter: str, variant: str, opset: int, workdir: Path) -> str:
    """Outcome (see the module docstring) of exporting ``tiny`` with ``variant`` at ``opset``."""
    recipe = VARIANTS[variant]
    config = get_preset("tiny", attention=recipe.implementation)
    module = build(config, seed=0)
    example = torch.randint(0, config.vocab_size, (EXAMPLE_BATCH, EXAMPLE_SEQ), dtype=torch.int64)
    path = workdir / f"{exporter}-{variant}-{opset}.onnx"
    try:
        # The TorchScript exporter prints its whole IR graph on a failure: keep the table readable.
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            _torch_export(module, example, path, opset, exporter)
    except Exception as exc:  # the outcome is the measurement
        return f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
    model = onnx.load(str(path))
    got = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if got != opset:
        return f"produces opset {got}"
    try:
        model = finish_variant(model, variant, "fp32", config.n_layers)
    except VariantMismatch:
        return f"no {variant} attention"
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        return f"checker: {str(exc).splitlines()[0][:80]}"
    ids = torch.randint(0, config.vocab_size, (2, 5), dtype=torch.int64)
    with torch.inference_mode():
        expected = module(ids).numpy()
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - ORT raises several types for an unsupported opset
        return "ok, ORT cannot load"
    (got_logits,) = session.run(None, {session.get_inputs()[0].name: ids.numpy()})
    err = float(np.max(np.abs(got_logits - expected)))
    if not np.allclose(got_logits, expected, atol=1e-4, rtol=1e-4):
        return f"disagrees (max abs err {err:.1e})"
    return "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--opsets", default="7-26", help="LO-HI, inclusive")
    parser.add_argument("--exporters", default=",".join(EXPORTERS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--write", type=Path, help="write the table as JSON here")
    args = parser.parse_args(argv)
    lo, _, hi = args.opsets.partition("-")
    opsets = list(range(int(lo), int(hi or lo) + 1))
    logging.disable(logging.WARNING)  # the exporters' version-conversion chatter; the outcome says it
    torch.manual_seed(0)
    outcomes: dict[str, dict[str, dict[str, str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for exporter in args.exporters.split(","):
            for variant in args.variants.split(","):
                row = outcomes.setdefault(exporter, {}).setdefault(variant, {})
                for opset in opsets:
                    row[str(opset)] = probe(exporter, variant, opset, Path(tmp))
                    print(f"{exporter:11} {variant:15} opset {opset:2}: {row[str(opset)]}", file=sys.stderr,
                          flush=True)
    versions = {**_versions(), "onnxruntime": ort.__version__}
    if args.write and args.write.exists():  # merge: earlier runs measured other cells
        earlier = json.loads(args.write.read_text())
        if earlier.get("measured_with") not in (None, versions):
            parser.error(f"{args.write} was measured with {earlier['measured_with']}, not {versions}")
        for exporter, by_variant in earlier.get("outcomes", {}).items():
            for variant, row in by_variant.items():
                merged = {**row, **outcomes.get(exporter, {}).get(variant, {})}
                outcomes.setdefault(exporter, {})[variant] = dict(sorted(merged.items(), key=lambda kv: int(kv[0])))
    order = {name: i for i, name in enumerate([*EXPORTERS, *VARIANTS])}
    outcomes = {e: dict(sorted(by_variant.items(), key=lambda kv: order.get(kv[0], len(order))))
                for e, by_variant in sorted(outcomes.items(), key=lambda kv: order.get(kv[0], len(order)))}
    supported = {e: {v: [int(o) for o, what in row.items() if what in SUPPORTED] for v, row in by_variant.items()}
                 for e, by_variant in outcomes.items()}
    print(f"Measured with {', '.join(f'{k} {v}' for k, v in sorted(versions.items()))}.\n")
    print("| exporter | attention | opsets probed | supported | other outcomes |")
    print("| --- | --- | --- | --- | --- |")
    for exporter, by_variant in outcomes.items():
        for variant, row in by_variant.items():
            others: dict[str, list[int]] = {}
            for o, what in row.items():
                if what != "ok":  # the table names the exception; the JSON keeps its message
                    label = ": ".join(what.split(": ")[:2]) if what.startswith("error: ") else what
                    others.setdefault(label, []).append(int(o))
            text = "; ".join(f"{describe(v)}: {k}" for k, v in others.items()) or "-"
            probed = describe([int(o) for o in row])
            print(f"| {exporter} | {variant} | {probed} | {describe(supported[exporter][variant])} | {text} |")
    if args.write:
        data = {"measured_with": versions,
                "command": "python scripts/measure_opsets.py --write onnxbench/export/opsets.json",
                "supported": supported, "outcomes": outcomes}
        text = json.dumps(data, indent=1)
        text = re.sub(r"\[\s*([0-9,\s]*?)\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
        args.write.write_text(text + "\n")
        print(f"\nwrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
