"""Runtimes describe themselves: typed options that reject unknown or mistyped keys for every runtime, tolerance
bands, tuning grids, devices; and a runtime defined in one file (tests/toy_runtime.py) runs a matrix through the
real worker processes once registered, with no other change to the package."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from onnxbench import runtimes
from onnxbench.benchmarks import MatrixSpec, TimingConfig, run_matrix
from onnxbench.benchmarks.measure.tune import grid
from onnxbench.errors import OnnxbenchError, OptionError
from onnxbench.runtimes import RuntimeOptions
from onnxbench.tolerance import CPU_BANDS, CUDA_BANDS, GPU_FP16, GPU_TF32, TF32, TOLERANCES


@pytest.fixture
def toy():
    from tests import toy_runtime

    runtimes.register(toy_runtime.OnnxReference)  # idempotent: importing the module registered it already
    yield toy_runtime.OnnxReference
    runtimes.unregister(toy_runtime.OnnxReference.name)


def _wrong_value(hint):
    """A value of the wrong type for a field annotated ``hint``."""
    if typing.get_origin(hint) is typing.Literal:
        return "not-" + str(typing.get_args(hint)[0])
    return []  # no option field is a list


@pytest.mark.parametrize("name", list(runtimes.registry()))
def test_every_runtime_rejects_unknown_and_mistyped_options_naming_the_known_keys(name):
    cls = runtimes.runtime_class(name)
    known = [f.name for f in dataclasses.fields(cls.options_type)]
    with pytest.raises(OptionError, match=f"unknown {name} option.*bogus.*known: {', '.join(known) or 'none'}"):
        cls.parse_options({"bogus": 1})
    hints = typing.get_type_hints(cls.options_type)
    for key in known:
        with pytest.raises(OptionError, match=f"{name} option '{key}' must be"):
            cls.parse_options({key: _wrong_value(hints[key])})
    assert cls.parse_options({}) == cls.options_type()  # no keys: the defaults
    assert issubclass(OptionError, OnnxbenchError) and issubclass(OptionError, ValueError)


@pytest.mark.parametrize("name", ["ort-cpu", "torch", "torch-compile"])
def test_tf32_on_a_cpu_runtime_is_an_error_not_silently_dropped(name):
    with pytest.raises(OptionError, match="unknown .* option.*'tf32'"):
        runtimes.runtime_class(name).parse_options({"tf32": True})


def test_open_checks_options_before_loading_anything(tiny_artifact):
    with pytest.raises(OptionError, match="unknown ort-cpu option"):
        runtimes.get("ort-cpu").open(tiny_artifact, RuntimeOptions(extra={"tf32": False}))
    with pytest.raises(OptionError, match="'inference_mode' must be bool, got 'no'"):
        runtimes.get("torch").open(tiny_artifact, RuntimeOptions(extra={"inference_mode": "no"}))


def test_runtimes_declare_device_bands_and_grids():
    classes = runtimes.registry()
    assert {n for n, c in classes.items() if c.device == "cuda"} == {"ort-cuda", "ort-trt", "tensorrt", "torch-cuda",
                                                                   "torch-compile-cuda", "ort-genai-cuda"}
    assert classes["ort-cpu"].tolerance("fp32") == TOLERANCES["fp32"]
    assert classes["ort-cpu"].tolerance("fp32", tf32=True) == TF32
    assert classes["tensorrt"].tolerance("fp32", tf32=True) == GPU_TF32
    assert classes["ort-cuda"].tolerance("fp16") == GPU_FP16
    assert classes["torch"].tolerances is CPU_BANDS and classes["ort-trt"].tolerances is CUDA_BANDS
    with pytest.raises(KeyError, match="known: \\['bf16', 'fp16', 'fp32'\\]"):
        classes["ort-cpu"].tolerance("int4")
    assert "fused" in grid("ort-cuda") and "fused" in grid("ort-trt") and "default" in grid("ort-cuda")
    assert grid("tensorrt") == {} and grid("torch-compile") == {}
    for name in classes:  # every candidate of every grid is valid for its runtime
        for options in grid(name).values():
            classes[name].parse_options(options.extra)
    assert not any(hasattr(c, "kind") for c in classes.values())


def test_register_refuses_a_name_taken_by_another_class(toy):
    clash = type("Clash", (toy,), {"name": "ort-cpu"})
    with pytest.raises(runtimes.PluginError, match="'ort-cpu' is taken by onnxbench.runtimes.ort.OrtCpu"):
        runtimes.register(clash)
    with pytest.raises(runtimes.PluginError, match="not a concrete"):
        runtimes.register(runtimes.Runtime)


def test_a_runtime_from_one_file_runs_a_matrix_in_worker_processes(toy, tmp_path, cache_dir):
    assert "onnx-reference" in runtimes.registry() and "onnx-reference" not in MatrixSpec().runtimes
    spec = MatrixSpec(models=["tiny"], runtimes=["onnx-reference", "ort-cpu"], batches=[1], seq_lens=[4, 8],
                      timing=TimingConfig(warmup_iters=0, min_iters=2, min_time_s=0.0, max_iters=2))
    summary = run_matrix(spec, tmp_path / "run", cache_dir=cache_dir)  # isolated workers (the default)
    rows = [r for r in summary.rows if r["runtime"] == "onnx-reference"]
    assert len(rows) == 2 and summary.worker_start_s > 0
    for row in rows:
        assert row["status"] == "ok", row["reason"]
        assert row["agree"] and row["max_abs_err"] < 1e-3 and row["reference_runtime"] == "torch"
        assert row["provider_actual"] == "onnx.reference" and row["attention_provider"] is None
        assert '"verbose": 0' in row["options"]


def test_a_plugin_module_that_fails_to_import_is_named(monkeypatch):
    monkeypatch.setenv(runtimes.PLUGIN_ENV, "no_such_runtime_module")
    monkeypatch.setattr(runtimes, "_plugins_loaded", False)
    with pytest.raises(runtimes.PluginError, match="'no_such_runtime_module' .*ONNXBENCH_RUNTIMES.* failed"):
        runtimes.registry()


def _doctor(plugins: str):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, runtimes.PLUGIN_ENV: plugins, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "onnxbench.cli", "doctor"], capture_output=True, text=True,
                          timeout=300, cwd=root, env=env)


def test_doctor_lists_a_plugin_named_in_the_environment_with_its_device():
    proc = _doctor("tests.toy_runtime")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if "onnx-reference" in line)
    assert "cpu" in line and "yes" in line
    assert any("ort-cuda" in line and "cuda" in line.split("ort-cuda", 1)[1] for line in proc.stdout.splitlines())


def test_cli_turns_a_package_error_into_one_line_and_exit_2():
    proc = _doctor("no_such_runtime_module")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no_such_runtime_module" in errors[0] and "ONNXBENCH_RUNTIMES" in errors[0]
