"""The KV-cache layout of a decoder ONNX file, read from its graph: which feeds a prefill and a decode step need.

Three layouts are recognised (docs/generation.md, "ONNX decoders you bring"); all share the tensor names
``input_ids``, ``attention_mask``, ``past_key_values.{i}.key/value`` -> ``logits``, ``present.{i}.key/value``:

``onnxbench``
    onnxbench's own decoder-with-past export (:mod:`onnxbench.export.decoder_with_past`), or any graph with those
    names and no ``position_ids`` input: positions are computed inside the graph from the mask. The past grows by
    concatenation (``present`` = past + new), except in the ``ort-gqa-inplace`` export, which has the ``builder``
    layout's GroupQueryAttention over a shared buffer (``shared_buffer``; its metadata makes it ``onnxbench``).
``optimum``
    Hugging Face Optimum's ``text-generation-with-past`` export (one ``model.onnx``; past length 0 for the
    prefill): as ``onnxbench`` plus a ``position_ids`` (batch, sequence) int64 input, which the caller fills as
    transformers' ``prepare_inputs_for_generation`` does: ``cumsum(attention_mask) - 1``, and 1 on padding.
``builder``
    ONNX Runtime GenAI's model builder (``python -m onnxruntime_genai.models.builder``): the cache is read by
    ``com.microsoft.GroupQueryAttention`` nodes, which take a past/present buffer shared by the Generator and
    compute positions and valid lengths from the mask's row sums, so a padded batch must be **right**-padded
    (GroupQueryAttention's ``seqlens_k`` counts valid keys from position 0; ORT ``docs/ContribOperators.md``,
    GroupQueryAttention). Its ``genai_config.json`` beside the file gives what the graph leaves symbolic (d_head,
    named ``kv_cache_dim``) and the context length.

Anything else (a prefill-only graph, other input names, unpaired cache tensors) is a :class:`LayoutError` naming
the expected inputs and outputs (:data:`EXPECTED_IO`). Nothing is loaded but the graph (no weights).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from ..errors import OnnxbenchError

#: Layout names, the ``decoder_layout`` column's values.
LAYOUTS = ("onnxbench", "optimum", "builder")
#: What a decoder ONNX file must take and give, for error messages.
EXPECTED_IO = ("inputs input_ids int64 (batch, sequence), attention_mask int64 (batch, past + sequence), "
               "[position_ids int64 (batch, sequence),] past_key_values.{i}.key and past_key_values.{i}.value "
               "(batch, n_kv_heads, past, d_head) for i = 0 .. n_layers - 1; outputs logits (batch, sequence, "
               "vocab) and present.{i}.key, present.{i}.value")
_PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)$")
_MS_DOMAIN = "com.microsoft"


class LayoutError(OnnxbenchError, ValueError):
    """An ONNX file that is not a decoder with a KV cache in a known layout; the message names the file, what it
    has and what was expected (:data:`EXPECTED_IO`)."""


@dataclass(frozen=True)
class DecoderLayout:
    """What a decode loop needs to know of a decoder-with-past graph.

    Attributes:
        kind: ``onnxbench``, ``optimum`` or ``builder`` (module docstring).
        n_layers: number of (key, value) cache pairs.
        n_kv_heads: cache heads (dim 1 of ``past_key_values.*``; fewer than the query heads with GQA).
        d_head: head size (dim 3 of ``past_key_values.*``, or ``genai_config.json``'s ``head_size``).
        cache_dtype: numpy name of the cache's element type (``float32``, ``float16``, ``bfloat16``).
        vocab_size: logits' last axis (static in the graph, or from the files beside it), None when unknown.
        position_ids: whether the graph takes ``position_ids``.
        right_padding: whether padded rows must be right-padded (``builder``).
        max_positions: longest prompt + generation the model accepts, where known (onnxbench metadata,
            ``genai_config.json`` ``context_length``, or Hugging Face ``config.json`` beside the file).
        n_heads: query heads, where known (GroupQueryAttention's ``num_heads``, configs).
        axes: the graph's names of the batch, sequence, past and total-sequence axes (None where static), read
            from ``input_ids`` (batch, sequence), ``past_key_values.0.key`` (past) and ``attention_mask`` (total).
        genai_config: the ``genai_config.json`` read, if any.
        shared_buffer: whether the cache is one buffer past and present share, updated in place
            (``com.microsoft.GroupQueryAttention`` reading the past: the ``builder`` layout, and onnxbench's
            ``ort-gqa-inplace`` export); such a graph needs right-padded rows (``right_padding``).
    """

    kind: str
    n_layers: int
    n_kv_heads: int
    d_head: int
    cache_dtype: str = "float32"
    vocab_size: int | None = None
    position_ids: bool = False
    right_padding: bool = False
    max_positions: int | None = None
    n_heads: int | None = None
    axes: tuple[str | None, str | None, str | None, str | None] = ("batch", "sequence", "past_sequence",
                                                                   "total_sequence")
    genai_config: str | None = None
    shared_buffer: bool = False

    @classmethod
    def of_config(cls, config, cache_dtype: str = "float32") -> DecoderLayout:
        """The layout of onnxbench's decoder-with-past export of ``config`` (a
        :class:`onnxbench.models.TransformerConfig`), without reading a file."""
        return cls("onnxbench", config.n_layers, config.n_kv_heads, config.d_head, cache_dtype, config.vocab_size,
                   max_positions=config.max_positions, n_heads=config.n_heads)

    @property
    def cache_names(self) -> list[str]:
        """``{i}.key`` / ``{i}.value`` for each block, in order (prefix ``past_key_values.`` or ``present.``)."""
        return [f"{i}.{kv}" for i in range(self.n_layers) for kv in ("key", "value")]

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        """An empty cache (past length 0) for a prefill: each ``past_key_values.*`` (batch, n_kv_heads, 0, d_head)
        in the cache dtype (float32 standing in for bfloat16, which numpy lacks)."""
        dtype = np.float32 if self.cache_dtype == "bfloat16" else np.dtype(self.cache_dtype)
        shape = (batch, self.n_kv_heads, 0, self.d_head)
        return {f"past_key_values.{name}": np.zeros(shape, dtype) for name in self.cache_names}

    def forward_feeds(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """Feeds of one forward over whole sequences from an empty cache (a prefill, or a teacher-forced
        recomputation), for sequences left-padded as onnxbench's prompts are.

        Args:
            input_ids / attention_mask: int64 (B, T), 0 in the mask on left padding.

        Returns:
            The feeds; for the ``builder`` layout with padding the rows are moved to right padding
            (:func:`left_to_right`): read the logits back with :meth:`logits_as_left_padded`.
        """
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        if self.right_padding:
            ids, mask = left_to_right(ids, mask)
        feeds = {"input_ids": ids, "attention_mask": mask, **self.empty_past(ids.shape[0])}
        if self.position_ids:
            feeds["position_ids"] = position_ids(mask)
        return feeds

    def logits_as_left_padded(self, logits: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """``logits`` (B, T, V) of :meth:`forward_feeds`' sequences at the positions of the left-padded input
        (the identity unless the layout right-padded them). Positions of padding hold no meaningful value."""
        if not self.right_padding:
            return logits
        return right_to_left(logits, attention_mask)

    def with_(self, **changes) -> DecoderLayout:
        """A copy with ``changes``."""
        return replace(self, **changes)


def position_ids(attention_mask: np.ndarray) -> np.ndarray:
    """Position ids of (left-padded) rows: ``cumsum(mask) - 1`` along each row, 1 on padding, int64 (B, T).

    This is transformers' convention (``GenerationMixin.prepare_inputs_for_generation``:
    ``position_ids = attention_mask.long().cumsum(-1) - 1; position_ids.masked_fill_(attention_mask == 0, 1)``),
    which Optimum's ONNX decoders expect; a padded position's value never reaches a real token's logits.
    """
    mask = np.asarray(attention_mask, dtype=np.int64)
    return np.where(mask == 0, 1, np.cumsum(mask, axis=1) - 1).astype(np.int64)


def left_to_right(input_ids: np.ndarray, attention_mask: np.ndarray, pad_id: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded rows -> right-padded: each row's tokens moved to the front, ``pad_id`` and mask 0 after them.

    Args:
        input_ids / attention_mask: int64 (B, T); each row's mask is 0 on a left prefix and 1 after it.

    Returns:
        (input_ids, attention_mask) int64 (B, T).
    """
    lengths = attention_mask.sum(axis=1)
    ids, mask = np.full_like(input_ids, pad_id), np.zeros_like(attention_mask)
    width = input_ids.shape[1]
    for row, n in enumerate(lengths):
        ids[row, :n] = input_ids[row, width - n:]
        mask[row, :n] = 1
    return ids, mask


def right_to_left(values: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Per-position ``values`` (B, T, ...) of right-padded rows placed at their left-padded positions (the
    inverse of :func:`left_to_right` for ``attention_mask``, the left-padded mask); padding positions get the
    right-padded row's tail (meaningless, as any padding position's output)."""
    lengths = attention_mask.sum(axis=1)
    width = values.shape[1]
    out = np.empty_like(values)
    for row, n in enumerate(lengths):
        out[row, width - n:] = values[row, :n]
        out[row, :width - n] = values[row, n:]
    return out


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
            for d in value.type.tensor_type.shape.dim]


def _side_json(path: Path, name: str) -> dict | None:
    side = path.parent / name
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError):
        return None


def detect_layout(path: str | Path) -> DecoderLayout:
    """The layout of the decoder ONNX file at ``path`` (graph only, weights not loaded), cached per file version.

    Raises:
        LayoutError: for a file that is not a decoder with a KV cache in a known layout, or whose cache sizes
            cannot be read (names what it has and :data:`EXPECTED_IO`).
        FileNotFoundError: for a missing file.
    """
    path = Path(path)
    found = _cached(str(path.resolve()), path.stat().st_mtime_ns)
    if isinstance(found, LayoutError):
        raise found
    return found


@functools.lru_cache(maxsize=64)
def _cached(path_str: str, mtime_ns: int) -> DecoderLayout | LayoutError:
    # a refusal is cached too: asking again must not parse the file again (a graph with embedded weights is
    # read whole by onnx.load)
    try:
        return _detect(Path(path_str))
    except LayoutError as exc:
        return exc


def _detect(path: Path) -> DecoderLayout:
    path_str = str(path)
    try:
        model = onnx.load(path_str, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... depending on the damage
        raise LayoutError(f"{path} is not a loadable ONNX model: {exc}") from exc
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = {v.name: v for v in graph.input if v.name not in initializers}
    outputs = {v.name: v for v in graph.output}
    has = f"it has inputs {sorted(inputs)} and outputs {sorted(outputs)[:8]}{' ...' if len(outputs) > 8 else ''}"
    fail = lambda why: LayoutError(f"{path} is not a decoder with a KV cache in a layout onnxbench knows "  # noqa: E731
                                   f"({why}): expected {EXPECTED_IO}; {has}")
    past = {}
    for name in inputs:
        match = _PAST.match(name)
        if match:
            past.setdefault(int(match.group(1)), set()).add(match.group(2))
    missing = [n for n in ("input_ids", "attention_mask") if n not in inputs]
    if missing or "logits" not in outputs:
        raise fail(f"missing {', '.join(missing + ([] if 'logits' in outputs else ['output logits']))}")
    if not past:
        raise fail("no past_key_values.* inputs: a graph without a KV cache runs the prefill scenario only")
    n_layers = max(past) + 1
    unpaired = [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")
                if kv not in past.get(i, ())]
    unpaired += [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")
                 if f"present.{i}.{kv}" not in outputs]
    if unpaired:
        raise fail(f"cache tensors missing: {', '.join(unpaired[:4])}{' ...' if len(unpaired) > 4 else ''}")
    extra = sorted(set(inputs) - {"input_ids", "attention_mask", "position_ids"}
                   - {f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")})
    if extra:
        raise fail(f"inputs onnxbench cannot feed: {', '.join(extra)}")
    for name in ("input_ids", "attention_mask", "position_ids"):
        if name in inputs and inputs[name].type.tensor_type.elem_type != onnx.TensorProto.INT64:
            elem = onnx.TensorProto.DataType.Name(inputs[name].type.tensor_type.elem_type)
            raise fail(f"{name} is {elem.lower()}, not int64")
    key = inputs["past_key_values.0.key"]
    key_dims = _dims(key)
    if len(key_dims) != 4:
        raise fail(f"past_key_values.0.key has rank {len(key_dims)}, not 4")
    cache_dtype = onnx.helper.tensor_dtype_to_np_dtype(key.type.tensor_type.elem_type).name \
        if key.type.tensor_type.elem_type != onnx.TensorProto.BFLOAT16 else "bfloat16"

    genai = _side_json(path, "genai_config.json")
    decoder_config = (genai or {}).get("model", {}).get("decoder", {}) if isinstance(genai, dict) else {}
    hf = _side_json(path, "config.json")
    hf = hf if isinstance(hf, dict) and "model_type" in hf else {}
    meta = {p.key: p.value for p in model.metadata_props}
    ours = json.loads(meta["onnxbench.config"]) if "onnxbench.config" in meta else {}

    gqa = [n for n in graph.node if n.op_type == "GroupQueryAttention" and n.domain == _MS_DOMAIN
           and any(_PAST.match(i) for i in n.input)]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gqa[0].attribute} if gqa else {}

    n_kv = key_dims[1] if isinstance(key_dims[1], int) and key_dims[1] > 0 else (
        decoder_config.get("num_key_value_heads") or attrs.get("kv_num_heads"))
    d_head = key_dims[3] if isinstance(key_dims[3], int) and key_dims[3] > 0 else decoder_config.get("head_size")
    if not n_kv or not d_head:
        axis = "1 (n_kv_heads)" if not n_kv else "3 (d_head)"
        raise fail(f"past_key_values.0.key's axis {axis} is symbolic ({key_dims}) and no genai_config.json beside "
                   "the file gives it (num_key_value_heads, head_size)")
    logits_dims = _dims(outputs["logits"])
    vocab = logits_dims[-1] if logits_dims and isinstance(logits_dims[-1], int) and logits_dims[-1] > 0 else (
        (genai or {}).get("model", {}).get("vocab_size") or hf.get("vocab_size") or ours.get("vocab_size"))
    max_positions = (ours.get("max_positions") or (genai or {}).get("model", {}).get("context_length")
                     or hf.get("max_position_embeddings") or hf.get("n_positions"))
    n_heads = attrs.get("num_heads") or decoder_config.get("num_attention_heads") or ours.get("n_heads") or \
        hf.get("num_attention_heads") or hf.get("n_head")
    ids_dims = _dims(inputs["input_ids"])
    mask_dims = _dims(inputs["attention_mask"])
    named = lambda d: d if isinstance(d, str) else None  # noqa: E731
    axes = (named(ids_dims[0]) if ids_dims else None, named(ids_dims[1]) if len(ids_dims) > 1 else None,
            named(key_dims[2]), named(mask_dims[1]) if len(mask_dims) > 1 else None)
    if gqa:
        # onnxbench's own ort-gqa-inplace export has the builder's I/O; its metadata says whose it is
        kind = "onnxbench" if ours else "builder"
    elif "position_ids" in inputs:
        kind = "optimum"
    else:
        kind = "onnxbench"
    return DecoderLayout(kind, n_layers, int(n_kv), int(d_head), cache_dtype, int(vocab) if vocab else None,
                         "position_ids" in inputs, bool(gqa),
                         int(max_positions) if max_positions else None, int(n_heads) if n_heads else None, axes,
                         str(path.parent / "genai_config.json") if genai is not None else None, bool(gqa))
