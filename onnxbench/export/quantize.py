"""``int8-dynamic``: an fp32 ONNX graph with its MatMul weights quantized to int8 by ONNX Runtime's dynamic
quantization, cached like an export.

Dynamic quantization (``onnxruntime.quantization.quantize_dynamic``; https://onnxruntime.ai/docs/performance/
model-optimizations/quantization.html) stores each MatMul weight as 8-bit integers with a scale (and zero point)
per output channel, and quantizes the activation feeding it at run time (``DynamicQuantizeLinear``: uint8, one
scale per tensor per inference); the product runs as ``MatMulInteger`` (int32 accumulation) and is rescaled to
float. ONNX Runtime fuses the pattern into its ``DynamicQuantizeMatMul`` kernel when the session is created.
No calibration data is needed, so any fp32 graph qualifies: an onnxbench export or a user's file.

The options and why they are the defaults (measurements in docs/quantization.md):

- **weights QInt8, activations QUInt8** ("U8S8"): ONNX Runtime's default and its fast path on x86-64 (the
  AVX2/AVX-512 kernels multiply u8 by s8 with ``VPMADDUBSW``, or ``VPDPBUSD`` with VNNI); dynamic quantization
  supports only uint8 activations. QUInt8 weights ("U8U8") avoid the saturation described next but run a slower
  kernel.
- **reduce_range**: weights use 7 bits ([-64, 63]). On AVX2 and AVX-512 machines *without* VNNI the U8S8 kernel
  adds pairs of u8·s8 products into int16 and can saturate; the ORT docs advise reduce_range for U8S8 there, and in
  particular together with per-channel weights. With VNNI it is not needed. An artifact is cached once and may run
  on either kind of CPU, so the portable setting is the default.
- **per_channel**: one scale per output column of each weight, so that one large channel does not coarsen the
  others (the docs: "can improve the accuracy for models whose weight ranges are large").
- **op types ``MatMul`` with a constant B only** (``MatMulConstBOnly``): the weights; activation·activation
  products (q·k^T, softmax·v) stay float. The ONNX ``Attention`` operator (opset 23) is excluded on purpose: the
  quantizer's registry maps op type ``Attention`` to the com.microsoft one and writes an invalid ``QAttention``.

Before quantizing, ``onnxruntime.quantization.shape_inference.quant_pre_process`` runs symbolic shape inference,
ONNX Runtime's basic graph optimisations (constant folding: the tied unembedding's ``Transpose(E)`` becomes an
initializer, so the largest MatMul of a language model gets quantized too) and ONNX shape inference. Symbolic
shape inference does not know every operator (it fails on the ONNX ``Attention`` of opset 23 and leaves the
com.microsoft ``MultiHeadAttention`` graph incomplete); the preprocessing then runs without it, and the
``onnxbench.quantization`` metadata records which steps ran (a failed optimization step as failed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from .onnx_export import (
    ExportArtifact,
    _annotate_and_check,
    artifact_dir,
    cached_model,
    content_sha256,
    discard,
    external_data_files,
    publish,
    read_artifact,
    temp_model_path,
)

#: The precision label of a dynamically quantized artifact (``ExportArtifact.precision``, result rows).
INT8_DYNAMIC = "int8-dynamic"
#: The precision label of an artifact with 4-bit block-quantized weights (:mod:`onnxbench.export.quantize_int4`).
INT4_WEIGHT = "int4-weight"
#: Precisions made by quantizing an fp32 graph (a value of the matrix's ``precisions`` axis beside
#: :data:`onnxbench.export.PRECISIONS`); their rows are judged by :mod:`onnxbench.benchmarks.verify.quantized`.
QUANTIZED_PRECISIONS = (INT8_DYNAMIC, INT4_WEIGHT)
#: The operator that holds each quantized precision's weights, for the reason of a runtime that cannot run it.
QUANTIZED_OPS = {INT8_DYNAMIC: "DynamicQuantizeMatMul / MatMulInteger", INT4_WEIGHT: "com.microsoft.MatMulNBits"}
WEIGHT_TYPES = ("QInt8", "QUInt8")
#: Above this many bytes of weights the intermediate models are written with external data (protobuf's 2 GiB
#: limit on one message, with room for the graph itself).
EXTERNAL_DATA_BYTES = 1_800_000_000


@dataclass(frozen=True)
class Int8DynamicOptions:
    """How ``quantize_dynamic`` is called (defaults and reasons in the module docstring).

    Attributes:
        weight_type: ``"QInt8"`` (signed, symmetric) or ``"QUInt8"`` (unsigned, asymmetric) weights.
        per_channel: one scale per output channel of each weight (else one per weight tensor).
        reduce_range: 7-bit weights, for AVX2 / AVX-512 CPUs without VNNI.
        op_types: operator types whose constant weight is quantized.
    """

    weight_type: str = "QInt8"
    per_channel: bool = True
    reduce_range: bool = True
    op_types: tuple[str, ...] = ("MatMul",)

    def __post_init__(self) -> None:
        if self.weight_type not in WEIGHT_TYPES:
            raise ValueError(f"weight_type must be one of {WEIGHT_TYPES}, got {self.weight_type!r}")
        if not self.op_types:
            raise ValueError("op_types is empty: name at least one operator type to quantize (e.g. MatMul)")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "op_types": list(self.op_types)}


def model_sha256(path: str | Path) -> str:
    """The content hash of an ONNX model: the file and the external data files it references
    (:func:`onnxbench.export.content_sha256`, the ``onnx_sha256`` of result rows), so that a model whose
    weights live beside it is identified by its weights too.

    Raises:
        FileNotFoundError: if the file or one of its external data files is missing (names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} not found")
    return content_sha256(path)


def quantization_cache_key(source_sha256: str, options: Int8DynamicOptions) -> str:
    """Cache key of a quantized artifact: the source model's content hash (:func:`model_sha256`), the options,
    and the onnxruntime / onnx versions (a new quantizer may write a different graph). Format 2: the provenance
    records a failed optimization step as failed (docs/quantization.md)."""
    import onnxruntime

    fields = {"kind": INT8_DYNAMIC, "source_sha256": source_sha256, "options": options.to_dict(),
              "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}, "format": 2}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def quantize_int8_dynamic(
    source: ExportArtifact | str | Path,
    *,
    options: Int8DynamicOptions | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
) -> ExportArtifact:
    """Quantize an fp32 ONNX model's MatMul weights to int8 (``int8-dynamic``), or reuse the cached result.

    The artifact is ``<cache>/artifacts/<key>/model.onnx`` with the key from :func:`quantization_cache_key`;
    it takes the same inputs and returns the same outputs (float32) as the source. Its ``metadata_props`` keep the
    source's ``onnxbench.*`` keys (config, seed, variant, ... of an onnxbench export) with
    ``onnxbench.precision = int8-dynamic`` and add ``onnxbench.quantization`` (JSON: the options, the
    preprocessing steps that ran, the onnxruntime version, the number of MatMuls quantized),
    ``onnxbench.source_precision`` (``fp32``), ``onnxbench.source`` (path) and ``onnxbench.source_sha256``.

    Args:
        source: an fp32 artifact from :func:`onnxbench.export.to_onnx`, or the path of any fp32 ONNX file
            (weights inline or in external data files beside it).
        options: quantization options (default :class:`Int8DynamicOptions`).
        cache_dir: artifact cache (default :func:`onnxbench.export.default_cache_dir`).
        force: quantize again even if the cache has the artifact.

    Returns:
        An :class:`ExportArtifact` with ``precision == "int8-dynamic"``; ``export_s`` is the quantization time
        in seconds (0.0 and ``cached`` True when served from the cache).

    Raises:
        FileNotFoundError: if the source (or one of its external data files) is missing.
        ValueError: if the source is not a loadable ONNX model, is not fp32 (names its precision), has no
            MatMul with a constant weight to quantize, or the quantized model would exceed protobuf's 2 GiB.
    """
    options = options or Int8DynamicOptions()
    path = Path(source.path if isinstance(source, ExportArtifact) else source)
    meta = _source_metadata(path)
    source_sha = model_sha256(path)
    directory = artifact_dir(quantization_cache_key(source_sha, options), cache_dir)
    if (done := cached_model(directory)) is not None and not force:
        return dataclasses.replace(read_artifact(done, precision=INT8_DYNAMIC), cached=True)

    start = time.perf_counter()
    tmp = temp_model_path(directory)
    work = tmp.with_suffix(".d")  # intermediate files, possibly with external data, private to this process
    work.mkdir(exist_ok=True)
    try:
        large = _weight_bytes(path) > EXTERNAL_DATA_BYTES
        prepared, steps = _preprocess(path, work / "pre.onnx", large)
        quantized = work / "quantized.onnx"
        _quantize(prepared, quantized, options, large)
        n_quantized = _count(quantized, "MatMulInteger")
        if n_quantized == 0:
            raise ValueError(f"{path}: no MatMul with a constant weight was found to quantize; int8-dynamic "
                             "quantizes MatMul weights only, so this graph would stay fp32")
        info = {"method": "onnxruntime.quantization.quantize_dynamic", **options.to_dict(),
                "activation_type": "QUInt8", "matmul_const_b_only": True, "preprocess": steps,
                "matmuls_quantized": n_quantized, "onnxruntime": _ort_version()}
        metadata = {**meta, "onnxbench.precision": INT8_DYNAMIC, "onnxbench.source_precision": "fp32",
                    "onnxbench.quantization": json.dumps(info, sort_keys=True),
                    "onnxbench.source": str(path.resolve()), "onnxbench.source_sha256": source_sha}
        metadata.setdefault("onnxbench.model", path.stem)
        if _weight_bytes(quantized) > EXTERNAL_DATA_BYTES:
            raise ValueError(f"{path}: the quantized model holds more than {EXTERNAL_DATA_BYTES / 1e9:.1f} GB of "
                             "weights, beyond what one ONNX file without external data can hold (2 GiB)")
        shutil.move(quantized, tmp)
        _annotate_and_check(tmp, metadata)
    except BaseException:
        discard(tmp)  # no partial file is left behind
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    build_s = time.perf_counter() - start
    done = publish(tmp, directory, build_s)
    return dataclasses.replace(read_artifact(done, precision=INT8_DYNAMIC), export_s=build_s, cached=False)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _source_metadata(path: Path, target: str = INT8_DYNAMIC) -> dict[str, str]:
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... depending on the damage
        raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from exc
    meta = {p.key: p.value for p in model.metadata_props}
    precision = meta.get("onnxbench.precision")
    if precision is None:
        floats = [onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type).name
                  for o in model.graph.output if o.type.tensor_type.elem_type]
        floats = [f for f in floats if f.startswith(("float", "bfloat"))]
        precision = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(floats[0], floats[0]) \
            if floats else "fp32"
    if precision != "fp32":
        raise ValueError(f"{path} is {precision}; {target} quantization takes an fp32 graph "
                         "(export it with --precision fp32)")
    return {k: v for k, v in meta.items() if k.startswith("onnxbench.")}


def _weight_bytes(path: Path) -> int:
    total = path.stat().st_size
    graph = onnx.load(str(path), load_external_data=False)
    return total + sum((path.parent / loc).stat().st_size for loc in external_data_files(graph))


def _preprocess(source: Path, target: Path, large: bool) -> tuple[Path, list[str]]:
    """Run ``quant_pre_process``; without symbolic shape inference if that fails on this graph. Returns the
    prepared model and the steps as they went: ``quant_pre_process`` catches a failure of its ORT optimization
    step, logs it and goes on without it, so that step is listed as failed (with the error's last line) from
    the log, never as run."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    external = {"save_as_external_data": large, "all_tensors_to_one_file": True,
                "external_data_location": target.name + ".data"} if large else {}
    symbolic = "symbolic_shape_inference"
    source, target = source.resolve(), target.resolve()
    # On an incomplete inference, ONNX Runtime's symbolic shape inference saves its partial model and a weights
    # file into the current directory before raising; run it from the private work directory instead.
    cwd = os.getcwd()
    os.chdir(target.parent)
    try:
        try:
            with _OptimizationLog() as log:
                quant_pre_process(str(source), str(target), **external)
        except Exception as exc:  # symbolic_shape_infer raises AssertionError / Exception on operators it lacks
            logging.getLogger(__name__).info("symbolic shape inference failed on %s (%s); preprocessing without it",
                                             source, exc)
            symbolic = f"symbolic_shape_inference skipped ({type(exc).__name__}: {str(exc)[:80]})"
            with _OptimizationLog() as log:
                quant_pre_process(str(source), str(target), skip_symbolic_shape=True, **external)
    finally:
        os.chdir(cwd)
    optimization = f"ort_basic_optimization failed ({log.failure})" if log.failure else "ort_basic_optimization"
    return target, [symbolic, optimization, "onnx_shape_inference"]


class _OptimizationLog(logging.Handler):
    """Collects what ``onnxruntime.quantization.shape_inference`` logs at ERROR while it is active (its
    optimization step's failure and traceback), instead of printing ORT's traceback on the console.

    Attributes:
        failure: the last line of the logged traceback (the exception; its end, where the cause is, when it is
            long), "" when nothing failed.
    """

    LOGGER = "onnxruntime.quantization.shape_inference"

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.failure = ""

    def emit(self, record: logging.LogRecord) -> None:
        lines = [line for line in record.getMessage().strip().splitlines() if line.strip()]
        if len(lines) > 1 or not self.failure:  # the traceback record names the exception in its last line
            text = lines[-1].strip().split("onnxruntime_pybind11_state.")[-1] if lines else "an error was logged"
            self.failure = text if len(text) <= 200 else "..." + text[-200:]

    def __enter__(self) -> _OptimizationLog:
        logger = logging.getLogger(self.LOGGER)
        self._propagate = logger.propagate
        logger.addHandler(self)
        logger.propagate = False
        return self

    def __exit__(self, *exc) -> None:
        logger = logging.getLogger(self.LOGGER)
        logger.removeHandler(self)
        logger.propagate = self._propagate


def _quantize(source: Path, target: Path, options: Int8DynamicOptions, large: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), op_types_to_quantize=list(options.op_types),
                     per_channel=options.per_channel, reduce_range=options.reduce_range,
                     weight_type=getattr(QuantType, options.weight_type), use_external_data_format=large,
                     extra_options={"MatMulConstBOnly": True})


def _count(path: Path, op_type: str) -> int:
    return sum(n.op_type == op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
