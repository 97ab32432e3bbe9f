"""Wall time and peak resident memory of exporting a model with more than 2 GiB of weights.

Exports, in this process and into a throw-away cache, either the one-layer, 262144-token-vocabulary model of
``tests/export/test_large_model.py`` (default: 604M parameters, 2.4 GB fp32) or a preset (``--preset gpt2-large``), and
prints the weights' size, the export's wall time, the process's peak RSS (``getrusage`` ``ru_maxrss``: the
high-water mark of the whole process, model construction included) and their ratio, then the files written.
The figures for docs/export.md come from here.

Usage::

    python scripts/measure_large_export.py [--preset NAME] [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from onnxbench.export import to_onnx
from onnxbench.models import TransformerConfig, get_preset

HUGE_VOCAB = TransformerConfig(vocab_size=262_144, max_positions=16, d_model=2304, n_heads=8, n_layers=1, d_ff=256)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", help="a preset instead of the huge-vocabulary model")
    parser.add_argument("--keep", type=Path, help="export into this cache and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    config = get_preset(args.preset) if args.preset else HUGE_VOCAB
    weights = config.n_params * 4
    cache = args.keep or Path(tempfile.mkdtemp(prefix="onnxbench-large-"))
    try:
        start = time.perf_counter()
        artifact = to_onnx(config, cache_dir=cache, model_name=args.preset or "huge-vocab")
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        print(f"model: {args.preset or 'huge-vocab'} ({config.n_params / 1e6:.0f}M parameters, "
              f"{weights / 2**30:.2f} GiB fp32)")
        print(f"export wall time: {wall:.1f} s (to_onnx, model construction included)")
        print(f"peak RSS: {peak / 2**30:.2f} GiB = {peak / weights:.2f} x the weights")
        for path in sorted(artifact.path.parent.iterdir()):
            print(f"  {path.name}: {path.stat().st_size / 2**20:,.1f} MiB")
    finally:
        if args.keep is None:
            shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
