"""``peak_rss_mb`` covers the runtime's session, not the reference: the float64 and fp32 torch modules of the
reference are built and run in a child process of the worker (docs/schema.md, ``peak_rss_mb``)."""

from onnxbench.benchmarks import MatrixSpec, read_rows, run_matrix
from onnxbench.benchmarks.measure.footprint import MIB, footprint
from onnxbench.benchmarks.measure.timing import TimingConfig
from onnxbench.models import TransformerConfig, build
from onnxbench.models.gpt2 import save_checkpoint

# One block behind a wide embedding: 40 M parameters, the reference's float64 and fp32 modules 480 MB, the
# fp32 ONNX session 160 MB; an 8-token forward's activations are tiny beside them.
WIDE = TransformerConfig(vocab_size=32768, max_positions=64, d_model=1024, n_heads=8, n_layers=1, d_ff=1024)

def test_peak_rss_of_an_ort_row_does_not_hold_the_reference(tmp_path, cache_dir):
    ckpt = save_checkpoint(build(WIDE, seed=0), tmp_path / "wide")
    spec = MatrixSpec(models=["tiny"], checkpoints=[str(ckpt)], runtimes=["ort-cpu"], batches=[1], seq_lens=[8],
                      timing=TimingConfig(warmup_iters=1, min_iters=3, min_time_s=0.02))
    run_matrix(spec, tmp_path / "run", cache_dir=cache_dir)
    rows = {r["model"]: r for r in read_rows(tmp_path / "run")}
    assert [r["status"] for r in rows.values()] == ["ok", "ok"], rows
    wide, tiny = rows.pop("wide"), rows.pop("tiny")
    assert wide["agree"] and wide["noise_floor"] is not None  # the reference did run, float64 floor included
    n_params = wide["n_params"]
    session_mib, reference_mib = n_params * 4 / 2**20, n_params * (8 + 4) / 2**20
    # the tiny model's row is the worker's baseline (interpreter, libraries, a session); the wide model's row
    # adds its own session (~160 MiB) and must not add the reference's modules (~480 MiB)
    added = wide["peak_rss_mb"] - tiny["peak_rss_mb"]
    print(f"\nwide peak {wide['peak_rss_mb']:.0f} MiB, tiny {tiny['peak_rss_mb']:.0f} MiB: +{added:.0f} MiB; "
          f"session weights {session_mib:.0f} MiB, reference modules {reference_mib:.0f} MiB")
    assert added < session_mib + 0.5 * reference_mib, (added, session_mib, reference_mib)
    assert added > 0.5 * session_mib  # the session's own weights do count
    # the memory pre-check's estimate of the worker's share (all but the reference) is an upper bound of it
    estimate = footprint(WIDE, "model", 1, 8, "fp32")
    assert (estimate.host("cpu") - estimate.reference) / MIB > wide["peak_rss_mb"]



# Run in a fresh interpreter: a process forks its reference before any torch operator runs (a worker does; this
# test process has run torch already, and GNU OpenMP's thread pool does not survive a fork).
_CHILD_SCRIPT = """
import os, signal, sys
import numpy as np
from onnxbench.benchmarks.run.reference_process import ReferenceProcess, ReferenceProcessError
from onnxbench.benchmarks.verify.reference import model_reference

make = lambda: model_reference("tiny", seed=0, cache_dir=sys.argv[1])
child = ReferenceProcess(make(), make)
feeds = {"input_ids": np.random.default_rng(0).integers(0, 512, (2, 8), dtype=np.int64)}
there = child.expected(feeds, "fp32")
local = model_reference("tiny", seed=0, cache_dir=sys.argv[2])
here = local.expected(feeds, "fp32")
assert child.label == local.label == "torch float64" and child.n_layers == local.n_layers == 2
assert child.is_self("torch", {"dtype": "float64"}) and not child.is_self("ort-cpu", {})
np.testing.assert_allclose(there.outputs["logits"], here.outputs["logits"], rtol=1e-12, atol=1e-12)
np.testing.assert_allclose(there.fp64["logits"][1], here.fp64["logits"][1], rtol=1e-6)  # the noise floor
assert len(there.fp64_blocks) == 2 and child.seconds > 0
try:
    child.expected({"x": feeds["input_ids"]}, "fp32")
except ValueError as exc:  # the reference's own error, raised again in this process
    print("raised:", exc)
os.kill(child.pid, signal.SIGKILL)
try:
    child.expected({"input_ids": feeds["input_ids"][:1]}, "fp32")
except ReferenceProcessError as exc:
    print("died:", exc)
child.close()
"""


def test_the_reference_process_gives_the_in_process_outputs_and_reports_its_death(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _CHILD_SCRIPT, str(tmp_path / "a"), str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "raised: the reference model takes 'input_ids'" in proc.stdout, proc.stdout
    assert ("died: the reference's process died (killed by signal 9 (SIGKILL, e.g. by the out-of-memory "
            "killer))") in proc.stdout, proc.stdout
