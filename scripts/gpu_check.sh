#!/usr/bin/env bash
# One-command GPU check (docs/gpu.md, "Check procedure"): probe the GPU and its libraries, run the tests marked
# gpu/tensorrt for real, measure the CUDA ceilings, then run every ready GPU runtime (torch-cuda,
# torch-compile-cuda, ort-cuda, tensorrt, ort-trt) over tiny and gpt2-small in fp32 and fp16 and print the
# tables. Runtimes reported ready are required (ONNXBENCH_REQUIRE_GPU): their skips fail the check (exit 1);
# the others are listed with the reason. With no GPU at all it lists everything missing and exits 0.
# It needs no install of this package: PYTHONPATH points at this checkout (or `pip install --no-deps -e .`).
#   scripts/gpu_check.sh [--out DIR] [--skip-tests] [--models tiny,gpt2-small] [--runtimes a,b]
# PYTHON selects the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" scripts/gpu_check.py "$@"
