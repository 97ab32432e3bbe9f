"""``int4-weight``: an fp32 ONNX graph whose MatMul weights are stored as 4-bit integers in blocks, run by ONNX
Runtime's ``com.microsoft.MatMulNBits``, made by ONNX Runtime's own quantizer and cached like an export.

Weight-only quantization (``onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer`` with a
``DefaultWeightOnlyQuantConfig``: round to nearest, no calibration data) replaces each MatMul whose B input is a
constant (K, N) weight by one ``MatMulNBits`` node holding B as 4-bit codes packed two per byte, (N, ceil(K /
block_size), block_size / 2) uint8, with one float scale per block of ``block_size`` consecutive elements along K
of each output column, (N, ceil(K / block_size)). The activation stays float. The operator contract (inputs,
packing, ``accuracy_level``): ONNX Runtime's docs/ContribOperators.md, ``com.microsoft.MatMulNBits``.

The options and why they are the defaults (measurements in docs/quantization.md, "int4-weight"):

- **block size 32**: the smallest block ONNX Runtime's 4-bit CPU kernels (MLAS ``SQNBitGemm``) take; a scale
  per 32 weights bounds the rounding error by the block's own range rather than the column's;
- **symmetric** (no zero points): codes in [-8, 7] times the block's scale; the ORT model builder's default for
  int4 and one input less to read per block;
- **accuracy_level 4** (the activation quantized to int8 per block inside the kernel, products accumulated in
  int32): the CPU's fast path, the level the ORT model builder writes for CPU; the unset level (0) runs the fp32
  compute path, which dequantizes every weight first.

The graph is prepared as for ``int8-dynamic`` (``quant_pre_process``: constant folding turns the tied
unembedding's ``Transpose(E)`` into an initializer, so the largest weight is quantized too); the provenance in
``onnxbench.quantization`` says what ran: the quantizer, the block size and accuracy level read back from the
MatMulNBits nodes, how many MatMuls became MatMulNBits and how many stayed float and why.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
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
    discard,
    publish,
    read_artifact,
    temp_model_path,
)
from .quantize import (
    EXTERNAL_DATA_BYTES,
    INT4_WEIGHT,
    _ort_version,
    _preprocess,
    _source_metadata,
    _weight_bytes,
    model_sha256,
)

QUANTIZER = "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer"
#: Why a MatMul of the prepared graph stayed float (keys of ``matmuls_float`` in the provenance).
NO_CONSTANT_WEIGHT = "no constant weight (activation x activation: q.k^T, softmax.v)"
LEFT_BY_QUANTIZER = "constant weight left float by the quantizer"


@dataclass(frozen=True)
class Int4WeightOptions:
    """How ``MatMulNBitsQuantizer`` is called (defaults and reasons in the module docstring).

    Attributes:
        block_size: weights per scale along K (a power of two, >= 16).
        is_symmetric: codes in [-8, 7] without zero points (else [0, 15] with a uint8 zero point per block).
        accuracy_level: ``MatMulNBits``'s compute type: 0 unset (fp32 path), 1 fp32, 2 fp16, 3 bf16, 4 int8.
    """

    block_size: int = 32
    is_symmetric: bool = True
    accuracy_level: int = 4

    def __post_init__(self) -> None:
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two >= 16, got {self.block_size}")
        if self.accuracy_level not in range(5):
            raise ValueError(f"accuracy_level must be 0..4, got {self.accuracy_level}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def int4_cache_key(source_sha256: str, options: Int4WeightOptions) -> str:
    """Cache key of an int4 artifact: the source's content hash, the options, the onnxruntime and onnx versions."""
    fields = {"kind": INT4_WEIGHT, "source_sha256": source_sha256, "options": options.to_dict(),
              "versions": {"onnxruntime": _ort_version(), "onnx": onnx.__version__}, "format": 1}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def quantize_int4_weight(
    source: ExportArtifact | str | Path,
    *,
    options: Int4WeightOptions | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
) -> ExportArtifact:
    """Quantize an fp32 ONNX model's MatMul weights to 4-bit blocks (``int4-weight``), or reuse the cached result.

    The artifact is ``<cache>/artifacts/<key>/model.onnx`` (key: :func:`int4_cache_key`); same inputs and float32
    outputs as the source. ``metadata_props`` keep the source's ``onnxbench.*`` keys with ``onnxbench.precision =
    int4-weight`` and add ``onnxbench.source_precision`` (fp32), ``onnxbench.source``, ``onnxbench.source_sha256``
    and ``onnxbench.quantization`` (JSON): ``quantizer``, ``algorithm``, ``bits``, the options asked, the
    ``block_sizes`` and ``accuracy_levels`` found on the MatMulNBits nodes, ``matmuls_converted``,
    ``matmuls_float`` (reason -> count), ``other_weight_ops_float`` (op -> count of weight-carrying nodes that
    are not MatMul, e.g. FusedMatMul or Gemm, which this quantizer does not take), ``preprocess`` and the
    onnxruntime version.

    Args:
        source: an fp32 artifact from :func:`onnxbench.export.to_onnx`, or the path of any fp32 ONNX file.
        options: quantizer options (default :class:`Int4WeightOptions`).
        cache_dir: artifact cache (default :func:`onnxbench.export.default_cache_dir`).
        force: quantize again even if the cache has the artifact.

    Returns:
        An :class:`ExportArtifact` with ``precision == "int4-weight"``; ``export_s`` is the quantization time in
        seconds (0.0 and ``cached`` True when served from the cache).

    Raises:
        FileNotFoundError: if the source (or one of its external data files) is missing.
        ValueError: if the source is not a loadable ONNX model, is not fp32, has no MatMul with a constant weight
            to quantize, or the quantized model would exceed protobuf's 2 GiB.
    """
    options = options or Int4WeightOptions()
    path = Path(source.path if isinstance(source, ExportArtifact) else source)
    meta = _source_metadata(path, INT4_WEIGHT)
    source_sha = model_sha256(path)
    directory = artifact_dir(int4_cache_key(source_sha, options), cache_dir)
    if (done := cached_model(directory)) is not None and not force:
        return dataclasses.replace(read_artifact(done, precision=INT4_WEIGHT), cached=True)

    start = time.perf_counter()
    tmp = temp_model_path(directory)
    work = tmp.with_suffix(".d")
    work.mkdir(exist_ok=True)
    try:
        prepared, steps = _preprocess(path, work / "pre.onnx", _weight_bytes(path) > EXTERNAL_DATA_BYTES)
        model = _quantize(onnx.load(str(prepared)), options)
        info = {"quantizer": QUANTIZER, "algorithm": "DEFAULT (round to nearest, one scale per block)", "bits": 4,
                **options.to_dict(), **provenance(model), "preprocess": steps, "onnxruntime": _ort_version()}
        if info["matmuls_converted"] == 0:
            raise ValueError(f"{path}: no MatMul with a constant weight was found to quantize; int4-weight "
                             "quantizes MatMul weights only, so this graph would stay fp32")
        if model.ByteSize() > EXTERNAL_DATA_BYTES:
            raise ValueError(f"{path}: the quantized model holds more than {EXTERNAL_DATA_BYTES / 1e9:.1f} GB, "
                             "beyond what one ONNX file without external data can hold (2 GiB)")
        onnx.save(model, str(tmp))
        metadata = {**meta, "onnxbench.precision": INT4_WEIGHT, "onnxbench.source_precision": "fp32",
                    "onnxbench.quantization": json.dumps(info, sort_keys=True),
                    "onnxbench.source": str(path.resolve()), "onnxbench.source_sha256": source_sha}
        metadata.setdefault("onnxbench.model", path.stem)
        _annotate_and_check(tmp, metadata)
    except BaseException:
        discard(tmp)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    build_s = time.perf_counter() - start
    done = publish(tmp, directory, build_s)
    return dataclasses.replace(read_artifact(done, precision=INT4_WEIGHT), export_s=build_s, cached=False)


def provenance(model: onnx.ModelProto) -> dict:
    """What the quantized graph holds: ``matmuls_converted`` (MatMulNBits nodes), their ``block_sizes``,
    ``accuracy_levels`` and ``bits`` as sorted lists, ``matmuls_float`` (reason -> count of the MatMuls left
    float: :data:`NO_CONSTANT_WEIGHT` or :data:`LEFT_BY_QUANTIZER` with the weight's shape) and
    ``other_weight_ops_float`` (``domain:op`` -> count of FusedMatMul / Gemm nodes with a constant weight)."""
    constants = {i.name: tuple(i.dims) for i in model.graph.initializer}
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits" and n.domain == "com.microsoft"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nbits]
    left: collections.Counter = collections.Counter()
    others: collections.Counter = collections.Counter()
    for node in model.graph.node:
        weight = constants.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type == "MatMul" and node.domain in ("", "ai.onnx"):
            left[NO_CONSTANT_WEIGHT if weight is None else f"{LEFT_BY_QUANTIZER} (shape {list(weight)})"] += 1
        elif node.op_type in ("FusedMatMul", "Gemm") and weight is not None:
            others[f"{node.domain or 'ai.onnx'}:{node.op_type}"] += 1
    return {"matmuls_converted": len(nbits),
            "block_sizes": sorted({a.get("block_size") for a in attrs}),
            "accuracy_levels": sorted({a.get("accuracy_level", 0) for a in attrs}),
            "bits_found": sorted({a.get("bits", 4) for a in attrs}),
            "matmuls_float": dict(left), "other_weight_ops_float": dict(others)}


def _quantize(model: onnx.ModelProto, options: Int4WeightOptions) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(block_size=options.block_size, is_symmetric=options.is_symmetric,
                                          accuracy_level=options.accuracy_level, op_types_to_quantize=("MatMul",),
                                          bits=4)
    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = logger.level
    logger.setLevel(logging.WARNING)  # it logs every node it visits at INFO, to the console
    try:
        quantizer = MatMulNBitsQuantizer(model, algo_config=config)
        quantizer.process()
    finally:
        logger.setLevel(level)
    return quantizer.model.model
