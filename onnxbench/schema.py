"""The result schema: one row per matrix cell, long format, flat columns.

Reports depend on these column names alone. Bump :data:`SCHEMA_VERSION` when a column changes meaning or is
removed; adding a column is backwards compatible (older runs read back with it as missing). docs/schema.md,
generated from :data:`COLUMNS`, documents each column for users.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1

#: Cell key columns: two rows with equal keys measure the same thing (used by resume and compare).
KEY_COLUMNS = ("model", "part", "attention", "export_path", "precision", "opset", "runtime", "threads", "batch",
               "seq_len", "config_id", "scenario", "new_tokens", "padding")
#: What a key column means in a run recorded before it existed (a join must not tell such rows apart); every row
#: before the threads axis ran at the runtime's default thread count (0).
KEY_DEFAULTS = {"config_id": "default", "threads": 0, "scenario": "prefill", "new_tokens": 0, "padding": 0.0,
                "export_path": "onnxbench"}

#: How :func:`cell_label` writes a key column's value (other columns: the bare value).
_LABEL_PREFIX = {"batch": "b", "seq_len": "t", "threads": "threads ", "new_tokens": "new tokens ",
                 "padding": "padding ", "opset": "opset "}


def cell_label(row, keys) -> str:
    """A cell named by the values of its key columns ``keys`` (a row, a dict or a Cell's fields by name), in
    :data:`KEY_COLUMNS` order: ``"llama-tiny ort-cpu optimum-opt b1 t8"``."""
    get = row.get if hasattr(row, "get") else lambda k: getattr(row, k)
    return " ".join(f"{_LABEL_PREFIX.get(k, '')}{get(k)}" for k in KEY_COLUMNS if k in keys)


def varying_keys(rows, always=("model", "runtime", "batch", "seq_len")) -> list[str]:
    """The key columns (:data:`KEY_COLUMNS` order) that take more than one value over ``rows`` (dicts or objects
    with the key columns as attributes), plus ``always``: what tells the rows apart in a list of them."""
    def get(row, k):
        return row.get(k) if hasattr(row, "get") else getattr(row, k, None)

    return [k for k in KEY_COLUMNS if k in always or len({repr(get(r, k)) for r in rows}) > 1]


#: column -> (dtype, unit or meaning)
COLUMNS: dict[str, tuple[str, str]] = {
    "schema_version": ("int", "version of this schema"),
    "run_id": ("str", "run identifier (UTC timestamp + short random suffix)"),
    "cell_id": ("str", "hash of the key columns"),
    "model": ("str", "preset name, or the ONNX file's stem for a foreign model"),
    "n_params": ("int", "parameters of the model (tied embedding counted once)"),
    "part": ("str", "'model' (full transformer) or 'attention' (one block's attention)"),
    "attention": ("str", "attention variant: decomposed | sdpa | onnx-attention | ort-fused | ort-gqa-inplace | "
                         "external (a graph onnxbench did not write: a user's ONNX file, or another tool's "
                         "export_path)"),
    "export_path": ("str", "how the graph was made from the model's weights: onnxbench (its own export, each "
                           "attention variant) | optimum (Hugging Face Optimum's ONNX exporter) | optimum-opt (that "
                           "export after ONNX Runtime's transformer optimizer) | builder (ONNX Runtime GenAI's "
                           "model builder); a user's ONNX file's rows carry the default, onnxbench, and run the "
                           "file as given (docs/export.md, \"Export paths\")"),
    "precision": ("str", "fp32 | fp16 | bf16 (the graph's compute precision) | int8-dynamic (the fp32 graph's "
                         "MatMul weights int8, activations quantized at run time) | int4-weight (the fp32 graph's "
                         "MatMul weights 4-bit in blocks of 32, com.microsoft.MatMulNBits; docs/quantization.md)"),
    "opset": ("int", "default-domain ONNX opset of the file that ran (its opset_import); the opset asked for "
                     "when the cell got no file"),
    "runtime": ("str", "registry name: torch | ort-cpu | ort-cuda | ort-trt | tensorrt | torch-compile | torch-cuda | "
                       "torch-compile-cuda | ort-genai | ort-genai-cuda"),
    "threads": ("int", "intra-op threads asked for (the matrix's threads axis, for runtimes that take it); 0: the "
                       "runtime's default (the options column records what was in force)"),
    "config_id": ("str", "'default' or the name of a tuned runtime configuration"),
    "options": ("str", "JSON of the runtime options in force (threads, optimisation level, TF32, ...)"),
    "provider_requested": ("str", "execution provider / device asked for"),
    "provider_actual": ("str", "execution provider / device that ran (read back from the library)"),
    "attention_provider": ("str", "EP that executed the attention nodes (ORT profiling), where known"),
    "device": ("str", "cpu | cuda:N"),
    "host": ("str", "host name of the machine that measured the cell (the worker's; docs/scaling.md)"),
    "gpu_name": ("str", "name of the GPU that measured the cell (cuDeviceGetName, e.g. 'NVIDIA H200'); empty for "
                        "CPU runtimes"),
    "batch": ("int", "sequences per inference (B)"),
    "seq_len": ("int", "tokens per sequence (T); prefill of T tokens"),
    "scenario": ("str", "prefill (one forward pass over batch x seq_len tokens) | generate (greedy decoding: a "
                        "prefill of the seq_len-token prompt, then new_tokens - 1 decode steps with the KV cache)"),
    "new_tokens": ("int", "generate: tokens generated per row, N (0 for prefill)"),
    "padding": ("float", "fraction of padding asked for in the batch's last row (row b has "
                         "floor(padding*T*(b+1)/batch) padding positions, whole tokens; the reason says when fewer "
                         "were fed): generate, left padding of the prompt; an ONNX file's prefill, right padding of "
                         "its attention mask, outputs judged at the real positions; 0 otherwise"),
    "status": ("str", "ok | skipped | failed"),
    "reason": ("str", "why a cell was skipped or failed; on an ok row, '; '-separated warnings (noisy timing, "
                      "above the measured peak) and notes (padding fed, how a padded batch was judged, why the "
                      "work columns are empty) or empty"),
    "warmup_iters": ("int", "untimed iterations before timing, at this shape"),
    "iters": ("int", "timed iterations"),
    "latency_ms_mean": ("float", "ms per inference, mean"),
    "latency_ms_p50": ("float", "ms, median"),
    "latency_ms_p90": ("float", "ms, 90th percentile"),
    "latency_ms_p99": ("float", "ms, 99th percentile"),
    "latency_ms_min": ("float", "ms, fastest iteration"),
    "latency_ms_std": ("float", "ms, sample standard deviation"),
    "ci95_p50_lo_ms": ("float", "ms, lower end of a distribution-free 95% CI of the median"),
    "ci95_p50_hi_ms": ("float", "ms, upper end of that CI"),
    "cov": ("float", "coefficient of variation std/mean (unitless)"),
    "h2d_ms": ("float", "ms, host-to-device copy of the inputs from page-locked host memory, device time between "
                        "CUDA events on the session's stream (GPU runtimes)"),
    "compute_ms": ("float", "ms, device time of one inference between CUDA events on the session's stream, as "
                            "trtexec's GPU Compute Time (GPU runtimes)"),
    "d2h_ms": ("float", "ms, device-to-host copy of the outputs into page-locked host memory, CUDA-event device "
                        "time (GPU runtimes)"),
    "ttft_ms": ("float", "generate: time to first token, ms: median prefill of the prompt + choice of token 0"),
    "tpot_ms_p50": ("float", "generate: time per output token, ms: median decode step (the step, its cache update "
                             "and the greedy choice; the latency_ms_* columns hold the same steps' statistics)"),
    "tpot_ms_p90": ("float", "generate: ms, 90th percentile of the decode steps"),
    "tpot_ms_p99": ("float", "generate: ms, 99th percentile of the decode steps"),
    "decode_tok_s": ("float", "generate: decode tokens/s = batch / tpot_ms_p50 * 1000"),
    "e2e_ms": ("float", "generate: ms, median end-to-end time of a generation (prefill + new_tokens - 1 steps)"),
    "first_divergent_step": ("int", "generate: first step (0 = the prefill's token) whose greedy token differs "
                                    "from the float64 no-cache reference's in any row; empty when all agree"),
    "throughput_seq_s": ("float", "sequences/s = batch / p50"),
    "throughput_tok_s": ("float", "tokens/s = batch * seq_len / p50 (generate: decode tokens/s, batch / p50)"),
    "max_abs_err": ("float", "max |y - y_ref| over the positions finite in both (y_ref: see reference_config)"),
    "max_rel_err": ("float", "max |y - y_ref| / max(|y_ref|, floor) over the same positions"),
    "cosine": ("float", "cosine similarity of y and y_ref over the positions finite in both"),
    "top1_agree": ("float", "fraction of positions whose argmax token equals the reference's"),
    "nan_count": ("int", "NaN or Inf values in the output"),
    "kl_mean": ("float", "nats, mean over positions of KL(p_ref || p) of the softmax over the last axis (the "
                         "next-token distribution); quantized rows only (docs/quantization.md)"),
    "kl_max": ("float", "nats, max over positions of that KL divergence; quantized rows only"),
    "rel_rms_err": ("float", "||y - y_ref|| / ||y_ref|| (2-norms over the output; unitless): the relative RMS error, "
                             "which sees a wrong scale that cosine, top-1 and KL cannot; quantized rows only "
                             "(docs/quantization.md)"),
    "ref_nonfinite": ("int", "NaN or Inf values in the reference output (where y differs there: not judged)"),
    "nonfinite_matched": ("int", "positions NaN/Inf in both output and reference with the same value (equal)"),
    "atol": ("float", "absolute tolerance used"),
    "rtol": ("float", "relative tolerance used"),
    "required_atol": ("float", "smallest atol that would have passed at rtol: max(|y - y_ref| - rtol*|y_ref|)"),
    "err_fp64": ("float", "max |y - y_fp64| over finite positions: the error against the float64 reference"),
    "noise_floor": ("float", "max |y_p - y_fp64| of the reference at the cell's precision p (>= u_p*max|y_fp64|)"),
    "floor_ratio": ("float", "err_fp64 / noise_floor (unitless; docs/agreement.md)"),
    "floor_factor": ("float", "largest floor_ratio that passes, for this runtime and precision"),
    "agree": ("bool", "passed: |y - y_ref| <= atol + rtol*|y_ref| where both finite, no NaN/Inf where y_ref is "
                      "finite, cosine >= min, floor_ratio <= floor_factor (a quantized row: the criteria of each "
                      "output's kind within the limits of docs/quantization.md, no NaN/Inf); empty for a "
                      "'reference' or 'floor' row"),
    "verdict": ("str", "pass | FAIL | reference (the row's runtime and configuration are the reference's own: "
                       "a comparison with itself) | floor (the row is the noise floor itself: torch at the cell's "
                       "precision against the float64 torch reference, floor_ratio 1 by construction); reference "
                       "and floor rows are neither a pass nor a fail. A FAIL row's reason names each criterion "
                       "missed, its value and its limit"),
    "criteria": ("str", "the pass criteria the verdict applied, per output: 'name: criterion, ...' with the limits "
                        "(e.g. 'logits: allclose atol=0.001 rtol=0.001, no NaN/Inf, cosine >= 0.99999, floor_ratio "
                        "<= 10'; a quantized row names each output's kind, vocabulary logits or other; "
                        "docs/agreement.md, docs/quantization.md)"),
    "first_divergent_block": ("int", "first block whose residual stream's error ratio exceeds floor_factor "
                                     "(n_layers: after the last block); located for failing rows"),
    "reference_runtime": ("str", "runtime the outputs were compared with"),
    "decoder_layout": ("str", "KV-cache layout of the decoder graph a generate cell (or a decoder file's prefill, "
                              "fed an empty cache) ran, read from the graph: onnxbench (positions from the mask) | "
                              "optimum (Hugging Face Optimum's, position_ids input) | builder (ONNX Runtime GenAI's "
                              "model builder: GroupQueryAttention over a shared buffer, right padding); empty for "
                              "graphs without a cache (docs/generation.md)"),
    "reference_config": ("str", "that reference's configuration: torch float64 | ort-cpu "
                                "graph_optimization_level=disable"),
    "flops": ("float", "FLOPs per inference at (batch, seq_len), from the work model (generate: per decode step at "
                       "the mean context length)"),
    "bytes_moved": ("float", "bytes per inference from the work model (weights + activations; generate: per decode "
                             "step, weights once + the KV cache read + the new keys/values and logits written)"),
    "achieved_gflops": ("float", "GFLOP/s = flops / p50"),
    "achieved_gbs": ("float", "GB/s = bytes_moved / p50"),
    "frac_peak_flops": ("float", "achieved_gflops / measured GEMM peak of the run (above 1: a measurement "
                        "problem, warned in reason)"),
    "frac_peak_bw": ("float", "achieved_gbs / measured memory bandwidth of the run (above 1: a measurement "
                     "problem, warned in reason)"),
    "peak_rss_mb": ("float", "MiB, peak resident memory (VmHWM) of the worker process while the cell's measured "
                    "part ran (its agreement run and timing): the runtime's session (weights, buffers, threads), "
                    "this cell's inputs and outputs, the reference's expected outputs for them, the interpreter "
                    "and libraries. Not the reference's modules: the float64 and precision torch modules (an ONNX "
                    "file's unoptimized ORT session) run in a child process of the worker (docs/design.md, "
                    "Isolation), except under the in-process executor (debugging), where they count. The peak is "
                    "reset after the memory kept for earlier cells' shapes (ONNX Runtime's bound buffers, earlier "
                    "reference outputs, freed heap; ORT's CPU arena is off unless enable_cpu_mem_arena is set) "
                    "was given back, so it does not depend on the cells that ran before it in the worker beyond "
                    "what they left allocated. The worker is forked from a process that imported the libraries, "
                    "so library pages only the imports touched are not counted (about 100 MiB less than in a "
                    "fresh interpreter; docs/design.md)"),
    "device_mem_mb": ("float", "MiB, device memory the session added: device-level used memory (cuMemGetInfo) after "
                               "the cell minus before the session opened; weights, activations, workspaces, "
                               "engines and pool reservations, not the CUDA context; other processes on the same "
                               "GPU count too (GPU runtimes)"),
    "cpu_busy_pct": ("float", "% of all logical cores' time that other processes used while the cell's measured "
                              "part ran (the system's CPU time minus the measuring process's, /proc/stat); empty "
                              "when that window was under 0.25 s; the run keeps the highest in header.json "
                              "(cpu_busy_pct_during), and above 20 % its timings are marked busy "
                              "(docs/measurement.md)"),
    "export_s": ("float", "s, export time of the artifact; empty when it came from the export cache or was not "
                          "exported (a foreign ONNX file)"),
    "build_s": ("float", "s, session creation / engine build / compile"),
    "harness_overhead_ms": ("float", "ms, timing-loop cost around a no-op (per iteration)"),
    "onnx_sha256": ("str", "content hash of the ONNX model run: sha256 over the graph file and every "
                           "external-data file it references (the file's plain sha256 when it has none; "
                           "docs/export.md)"),
    "timestamp": ("str", "UTC ISO-8601 time the row was written"),
}

STATUSES = ("ok", "skipped", "failed")


def empty_row() -> dict[str, Any]:
    """A row with every column present and set to None (``schema_version`` filled)."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row["schema_version"] = SCHEMA_VERSION
    return row


def make_row(**values: Any) -> dict[str, Any]:
    """Build a complete row from keyword values.

    Raises:
        KeyError: for a column not in :data:`COLUMNS` (a typo must not create a new column silently).
        ValueError: for a ``status`` outside :data:`STATUSES`.
    """
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown result columns {sorted(unknown)}; add them to onnxbench.schema.COLUMNS")
    row = empty_row()
    row.update(values)
    if row["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {row['status']!r}")
    return row
