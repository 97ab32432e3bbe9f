"""Derive tests/data/run_small_b from tests/data/run_small (a real tiny CPU run) by editing latencies.

run_small_b is NOT a measurement: it is run_small with planted changes, for the compare tests and goldens:
- a regression: ort-cpu at batch 4, seq_len 64 is 1.5x slower (every latency statistic scaled, throughput
  recomputed as batch * seq_len / p50);
- an improvement: torch at batch 1, seq_len 16 is 0.8x (20 % faster);
- a different environment: onnxruntime-gpu 1.31.1 -> 1.32.0 and a git sha, so compare warns;
- a new run id.
Every other cell is unchanged. Regenerate with:  python -m tests.derived_runs
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).parent / "data"
SCALE = {("ort-cpu", 4, 64): 1.5, ("torch", 1, 16): 0.8}
LATENCY_COLUMNS = ("latency_ms_mean", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_min",
                   "latency_ms_std", "ci95_p50_lo_ms", "ci95_p50_hi_ms")


def derive_run_small_b(src: Path = DATA / "run_small", dst: Path = DATA / "run_small_b") -> Path:
    """Write the derived run directory ``dst`` (header.json and results.jsonl) from ``src``."""
    header = json.loads((src / "header.json").read_text())
    run_id = header["run_id"] + "-b"
    header["run_id"] = run_id
    header["env"]["versions"]["onnxruntime-gpu"] = "1.32.0"
    header["env"]["git_sha"] = "0123456789ab"
    rows = []
    for line in (src / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        row["run_id"] = run_id
        scale = SCALE.get((row["runtime"], row["batch"], row["seq_len"]))
        if scale is not None:
            for col in LATENCY_COLUMNS:
                row[col] *= scale
            row["throughput_seq_s"] = row["batch"] / (row["latency_ms_p50"] / 1e3)
            row["throughput_tok_s"] = row["batch"] * row["seq_len"] / (row["latency_ms_p50"] / 1e3)
        rows.append(json.dumps(row))
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "header.json").write_text(json.dumps(header, indent=2) + "\n")
    (dst / "results.jsonl").write_text("\n".join(rows) + "\n")
    (dst / "README.md").write_text(__doc__)
    return dst


if __name__ == "__main__":
    print(derive_run_small_b())


def synthetic_run(dst: Path, src: Path = DATA / "run_small") -> Path:
    """A run directory exercising every optional report section, built from run_small's rows (not a
    measurement; written by tests into a temporary directory):

    - every run_small row again with attention ``sdpa`` and latencies x0.9 (a second attention variant);
    - ``ort-cuda`` rows with GPU fields (copy/compute split, device memory, the attention EP, roofline columns),
      faster than everything else, and failing agreement at batch 4, seq_len 64;
    - ``ort-cpu`` with a tuned configuration ``threads-1`` at batch 1;
    - a skipped ``tensorrt`` cell and a failed ``ort-trt`` cell with their reasons.
    """
    header = json.loads((src / "header.json").read_text())
    header["run_id"] = "synthetic"
    base = [json.loads(line) for line in (src / "results.jsonl").read_text().splitlines()]
    rows = []
    for attention, scale in (("decomposed", 1.0), ("sdpa", 0.9)):
        for row in base:
            row = {**row, "attention": attention, "run_id": "synthetic"}
            for col in LATENCY_COLUMNS:
                row[col] *= scale
            row["throughput_tok_s"] = row["batch"] * row["seq_len"] / (row["latency_ms_p50"] / 1e3)
            rows.append(row)
            if row["runtime"] == "ort-cpu" and row["batch"] == 1:
                tuned = {**row, "config_id": "threads-1", "options": '{"intra_op_num_threads": 1}'}
                tuned["latency_ms_p50"] *= 1.3
                rows.append(tuned)
            if row["runtime"] == "ort-cpu":
                gpu = {**row, "runtime": "ort-cuda", "provider_requested": "CUDAExecutionProvider",
                       "provider_actual": "CUDAExecutionProvider", "attention_provider": "CUDAExecutionProvider",
                       "device": "cuda:0", "h2d_ms": 0.01, "compute_ms": row["latency_ms_p50"] * 0.05,
                       "d2h_ms": 0.02, "device_mem_mb": 120.0, "flops": 1e9 * row["batch"] * row["seq_len"] / 16,
                       "achieved_gflops": 500.0, "frac_peak_flops": 0.25, "latency_ms_p50": row["latency_ms_p50"] / 10}
                gpu["throughput_tok_s"] = gpu["batch"] * gpu["seq_len"] / (gpu["latency_ms_p50"] / 1e3)
                if (gpu["batch"], gpu["seq_len"]) == (4, 64):
                    gpu.update(agree=False, verdict="FAIL", max_abs_err=0.5, max_rel_err=0.2, cosine=0.97)
                rows.append(gpu)
    first = base[0]
    rows.append({**first, "runtime": "tensorrt", "status": "skipped", "reason": "TensorRT is not installed",
                 **dict.fromkeys(LATENCY_COLUMNS), "agree": None, "run_id": "synthetic"})
    rows.append({**first, "runtime": "ort-trt", "status": "failed", "run_id": "synthetic",
                 "reason": "session creation failed: RuntimeError: libnvinfer.so.10 | not found",
                 **dict.fromkeys(LATENCY_COLUMNS), "agree": None})
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "header.json").write_text(json.dumps(header, indent=2) + "\n")
    (dst / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst
