"""The ``optimum`` and ``optimum-opt`` export paths: Hugging Face Optimum's ONNX exporter (``optimum-cli export onnx
--task text-generation-with-past``: one ``model.onnx`` with ``position_ids`` and ``past_key_values.*``, decoder
layout ``optimum``), and the same file after ONNX Runtime's transformer optimizer
(``onnxruntime.transformers.optimizer.optimize_model``).

``optimum-onnx`` 0.1.0 pins ``optimum~=2.1`` and ``transformers<4.58`` while onnxbench runs on transformers 5, so
the exporter runs in an interpreter of its own, named by ``ONNXBENCH_OPTIMUM_PYTHON`` (``make optimum-venv``
makes ``.venv-optimum`` with optimum-onnx, transformers < 4.58, onnxruntime, and torch 2.13.0 pinned so that pip
takes the local CPU build; docs/usage.md, "Export paths"). Without it the path's rows are ``skipped`` naming what
is missing. The transformer optimizer runs here (it comes with onnxruntime-gpu). Outputs are cached in the export
cache under ``paths/optimum*/`` by the weights, the opset and the tools' versions (docs/export.md).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

#: The environment variable naming the interpreter that has optimum-onnx.
PYTHON_ENV = "ONNXBENCH_OPTIMUM_PYTHON"
#: The package the path needs, as a user installs it.
PACKAGE = "optimum-onnx"
#: The make target that creates an interpreter with it.
MAKE_TARGET = "make optimum-venv"
_PROBE = ("import importlib.metadata as m, json\n"
          "def v(name):\n"
          "    try:\n"
          "        return m.version(name)\n"
          "    except m.PackageNotFoundError:\n"
          "        return None\n"
          "print(json.dumps({n: v(n) for n in ('optimum-onnx', 'optimum', 'transformers', 'torch', 'onnxruntime', "
          "'onnxruntime-gpu')}))\n")


def python() -> str | None:
    """The interpreter ``ONNXBENCH_OPTIMUM_PYTHON`` names, or None where it is unset."""
    return os.environ.get(PYTHON_ENV) or None


@functools.lru_cache(maxsize=8)
def _probe(interpreter: str) -> tuple[dict[str, str | None] | None, str]:
    try:
        proc = subprocess.run([interpreter, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if proc.returncode != 0:
        return None, proc.stderr.strip()[-300:]
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), ""
    except (ValueError, IndexError):
        return None, f"unreadable answer {proc.stdout[-200:]!r}"


def versions() -> dict[str, str | None] | None:
    """The versions of optimum-onnx, optimum, transformers, torch and onnxruntime in the optimum interpreter,
    or None where it is not usable."""
    interpreter = python()
    return _probe(interpreter)[0] if interpreter else None


def unavailable_reason() -> str | None:
    """Why the optimum exporter cannot run (a ``skipped`` row's reason naming what is missing), or None."""
    interpreter = python()
    how = f"{MAKE_TARGET}, then {PYTHON_ENV}=.venv-optimum/bin/python (docs/usage.md, \"Export paths\")"
    if not interpreter:
        return (f"export path optimum needs {PACKAGE}, which cannot share onnxbench's environment (it pins "
                f"transformers<4.58): {PYTHON_ENV} names no python with it; {how}")
    found, error = _probe(interpreter)
    if found is None:
        return f"export path optimum: {PYTHON_ENV}={interpreter} does not run ({error}); {how}"
    missing = [name for name in (PACKAGE, "transformers", "torch") if not found.get(name)]
    if not (found.get("onnxruntime") or found.get("onnxruntime-gpu")):
        missing.append("onnxruntime (optimum fixes the exported axes with it)")
    if missing:
        return f"export path optimum needs {', '.join(missing)} in {PYTHON_ENV}={interpreter}; {how}"
    return None


def export(checkpoint: Path, out: Path, opset: int, timeout_s: float = 3600) -> Path:
    """``optimum-cli export onnx --task text-generation-with-past --opset OPSET`` of the checkpoint folder into
    ``out``, offline, in the optimum interpreter.

    Returns:
        ``out/model.onnx``.

    Raises:
        RuntimeError: when the exporter fails (its exit status and the tail of its stderr) or writes no model.
    """
    cmd = [python(), "-m", "optimum.commands.optimum_cli", "export", "onnx", "--model", str(checkpoint),
           "--task", "text-generation-with-past", "--opset", str(opset), str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    model = out / "model.onnx"
    if proc.returncode != 0 or not model.is_file():
        raise RuntimeError(f"optimum-cli export onnx failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return model


def import_optimizer():
    """Import ``onnxruntime.transformers.optimizer`` with its own sibling modules winning over same-named ones:
    the package puts its directory at the *end* of ``sys.path`` and imports siblings by top-level name
    (``from onnx_utils import ...``), so an ``onnx_utils.py`` earlier on the path would shadow its own.

    Raises:
        ImportError: if a foreign ``onnx_utils`` module is already imported in this process (names it).
    """
    import onnxruntime.transformers as package

    directory = os.path.dirname(package.__file__)
    loaded = sys.modules.get("onnx_utils")
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(directory):
        raise ImportError(
            f"a module named onnx_utils is already imported from {loaded.__file__}; it shadows "
            "onnxruntime.transformers' own onnx_utils. Rename the local onnx_utils.py"
        )
    sys.path.insert(0, directory)
    try:
        return importlib.import_module("onnxruntime.transformers.optimizer")
    finally:
        sys.path.remove(directory)


def optimize(model: Path, out: Path, n_heads: int, d_model: int) -> Path:
    """ONNX Runtime's transformer optimizer on ``model`` (``model_type="gpt2"``, the type Optimum's own
    ``ORTOptimizer`` uses for GPT-2, Llama and Qwen2; ``opt_level=0``: fusions only, so that the graph stays
    device-neutral and ONNX Runtime's own graph optimizations still run at session creation), written to
    ``out/model.onnx`` with the files that describe the model (``config.json``, tokenizer) copied beside it.

    Raises:
        ImportError: see :func:`import_optimizer`.
        Exception: whatever the optimizer raises on a graph it cannot read.
    """
    import shutil

    optimizer = import_optimizer()
    optimized = optimizer.optimize_model(str(model), model_type="gpt2", num_heads=n_heads, hidden_size=d_model,
                                         opt_level=0, use_gpu=False)
    out.mkdir(parents=True, exist_ok=True)
    large = sum(f.stat().st_size for f in model.parent.iterdir() if f.is_file()) > 1536 * 2**20
    optimized.save_model_to_file(str(out / "model.onnx"), use_external_data_format=large)
    for item in model.parent.iterdir():
        if item.is_file() and item.suffix == ".json":
            shutil.copy2(item, out / item.name)
    return out / "model.onnx"
