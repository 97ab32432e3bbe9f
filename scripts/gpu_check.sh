#!/usr/bin/env bash
# One-command GPU check (see README.md, "GPU runtimes"): probe the GPU and its libraries, run the tests marked
# gpu/tensorrt for real, then run ort-cuda / tensorrt / ort-trt over tiny and gpt2-small in fp32 and fp16 and
# print the result table. Where some GPU libraries are missing it says which and runs what it can; with no GPU
# at all it lists everything missing and exits 0.
#   scripts/gpu_check.sh [--out DIR] [--skip-tests] [--models tiny,gpt2-small]
# PYTHON selects the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" scripts/gpu_check.py "$@"
