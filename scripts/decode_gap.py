"""The decode step of an ORT model builder folder under plain ONNX Runtime (the shared-buffer IOBinding loop
onnxbench's ort-cpu runs) with and without intra-op spinning and the CPU arena, beside onnxruntime-genai's
Generator on the same file: prints TTFT and TPOT p50 per configuration (docs/generation.md, "ONNX Runtime GenAI").

    python scripts/decode_gap.py FOLDER [genai ort-arena-off ort-arena-on ort-arena-on-nospin ort-arena-off-nospin]

FOLDER holds genai_config.json and model.onnx (e.g. $ONNXBENCH_CACHE/paths/builder/<model>-<hash>/)."""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

folder = sys.argv[1]
T0, N = (8, 8) if "tiny" in sys.argv[1] else (128, 64)
model_cfg = json.load(open(f"{folder}/genai_config.json"))["model"]
cfg = model_cfg["decoder"]
L, H, D = cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["head_size"]
rng = np.random.default_rng(0)
prompt = rng.integers(4, model_cfg["vocab_size"], size=(1, T0), dtype=np.int64)
MAXLEN = T0 + N


def ort_loop(arena: bool, spin: bool | None, profile: str | None = None):
    so = ort.SessionOptions()
    so.enable_cpu_mem_arena = arena
    if spin is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    s = ort.InferenceSession(f"{folder}/model.onnx", so, providers=["CPUExecutionProvider"])
    bufs = [ort.OrtValue.ortvalue_from_numpy(np.zeros((1, H, MAXLEN, D), np.float32)) for _ in range(2 * L)]
    b = s.io_binding()
    for i in range(L):
        for j, kv in enumerate(("key", "value")):
            v = bufs[2 * i + j]
            b.bind_ortvalue_input(f"past_key_values.{i}.{kv}", v)
            b.bind_ortvalue_output(f"present.{i}.{kv}", v)
    b.bind_cpu_input("input_ids", prompt)
    b.bind_cpu_input("attention_mask", np.ones((1, T0), np.int64))
    b.bind_output("logits")
    t = time.perf_counter()
    s.run_with_iobinding(b)
    ttft = time.perf_counter() - t
    out_names = [o.name for o in s.get_outputs()]
    logits = b.copy_outputs_to_cpu()[out_names.index("logits")]
    tok = int(logits[0, -1].argmax())
    steps = []
    for k in range(1, N):
        b.bind_cpu_input("input_ids", np.array([[tok]], np.int64))
        b.bind_cpu_input("attention_mask", np.ones((1, T0 + k), np.int64))
        b.bind_output("logits")
        t = time.perf_counter()
        s.run_with_iobinding(b)
        logits = b.copy_outputs_to_cpu()[out_names.index("logits")]
        tok = int(logits[0, -1].argmax())
        steps.append(time.perf_counter() - t)
    if profile:
        print("profile:", s.end_profiling())
    return ttft * 1e3, float(np.median(steps)) * 1e3


def genai_loop():
    import onnxruntime_genai as og
    model = og.Model(folder)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=MAXLEN, do_sample=False)
    g = og.Generator(model, params)
    t = time.perf_counter()
    g.append_tokens(prompt)
    g.generate_next_token()
    ttft = time.perf_counter() - t
    steps = []
    for _ in range(1, N):
        t = time.perf_counter()
        g.generate_next_token()
        steps.append(time.perf_counter() - t)
    return ttft * 1e3, float(np.median(steps)) * 1e3


which = sys.argv[2:] or ["genai", "ort-arena-off", "ort-arena-on", "ort-arena-on-nospin", "ort-arena-off-nospin"]
for name in which:
    if name == "genai":
        r = genai_loop()
    else:
        r = ort_loop("arena-on" in name, False if "nospin" in name else None,
                     "/tmp/gap/prof-" + name if "prof" in name else None)
    print(f"{name:24s} TTFT {r[0]:8.1f} ms  TPOT p50 {r[1]:7.2f} ms", flush=True)
