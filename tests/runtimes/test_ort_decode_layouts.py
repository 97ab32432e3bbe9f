"""Decoder layouts read from the graph and the ORT decode loop run on each (docs/generation.md, "ONNX decoders you
bring"): Optimum's layout (position_ids fed by the loop), onnxbench's (GQA caches n_kv_heads wide), the ORT model
builder's (detected, its d_head from genai_config.json; generated through the in-place loop, its shared
GroupQueryAttention buffer bound once, right-padded rows), and the errors for
files that are not decoders. The Optimum-layout and builder-layout files are made here (tests/decoder_files.py),
so these run without optimum or onnxruntime-genai."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from onnxbench import runtimes
from onnxbench.benchmarks.verify.reference import OnnxFileReference
from onnxbench.export import TensorSpec, read_artifact, to_onnx
from onnxbench.export.decoder_layout import EXPECTED_IO, LayoutError, detect_layout, left_to_right, position_ids
from onnxbench.models import GenerationError, greedy_generate
from onnxbench.runtimes import RuntimeOptions
from onnxbench.runtimes import decode as decode_module
from onnxbench.runtimes.trt_profiles import generation_ranges, input_profile
from tests.decoder_files import IR_VERSION, builder_layout_file, optimum_layout_file, perturbed

NEW = 8


@pytest.fixture(scope="module")
def optimum_files(tmp_path_factory):
    """{preset: (model, Optimum-layout file)} for a GQA Llama and a GPT-2 (learned positions)."""
    directory = tmp_path_factory.mktemp("optimum-layout")
    files = {}
    for name in ("llama-tiny", "tiny"):
        model = perturbed(name)
        files[name] = model, optimum_layout_file(model, directory / f"{name}.onnx")
    return files


def _prompts(batch=2, length=10, pad=4, vocab=512, seed=0):
    ids = np.random.default_rng(seed).integers(0, vocab, (batch, length))
    mask = np.ones_like(ids)
    ids[batch - 1, :pad], mask[batch - 1, :pad] = 0, 0
    return ids, mask


def _generate(session, ids, mask, new=NEW):
    loop = session.decoder(ids, mask, new)
    loop.reset(record=True)
    loop.prefill()
    for _ in range(new - 1):
        loop.step()
    return loop.tokens(), loop.logits()


def test_layouts_are_read_from_the_graph(optimum_files, tmp_path, cache_dir):
    llama = detect_layout(optimum_files["llama-tiny"][1])
    assert (llama.kind, llama.n_layers, llama.n_kv_heads, llama.d_head, llama.vocab_size) == ("optimum", 2, 2, 16,
                                                                                              512)
    assert llama.position_ids and not llama.right_padding and llama.cache_dtype == "float32"
    assert llama.axes == ("batch_size", "sequence_length", "past_sequence_length",
                          "past_sequence_length + sequence_length")
    assert detect_layout(optimum_files["tiny"][1]).n_kv_heads == 4  # GPT-2: as many K/V heads as queries
    ours = detect_layout(to_onnx(perturbed("llama-tiny").config, part="decoder-with-past", cache_dir=cache_dir).path)
    assert (ours.kind, ours.n_kv_heads, ours.position_ids, ours.max_positions) == ("onnxbench", 2, False, 128)
    builder = detect_layout(builder_layout_file(tmp_path / "built"))
    # kv_cache_dim is symbolic in the graph: d_head comes from genai_config.json, as the context length
    assert (builder.kind, builder.n_kv_heads, builder.d_head, builder.n_heads, builder.max_positions) == (
        "builder", 2, 16, 4, 256)
    assert builder.right_padding and not builder.position_ids and builder.genai_config.endswith("genai_config.json")


def _graph(path, inputs, outputs):
    nodes = [helper.make_node("Identity", [inputs[0][0]], [o[0]]) for o in outputs]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(*o) for o in outputs])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION),
              str(path))
    return path


def test_a_file_that_is_no_decoder_is_one_error_naming_the_expected_io(tmp_path, tiny_artifact):
    with pytest.raises(LayoutError, match="missing attention_mask") as info:
        detect_layout(tiny_artifact.path)  # the prefill-only export
    assert EXPECTED_IO in str(info.value) and "it has inputs ['input_ids']" in str(info.value)
    f, i = TensorProto.FLOAT, TensorProto.INT64
    cache = ["batch", 2, "past", 16]
    base = [("input_ids", i, ["batch", "seq"]), ("attention_mask", i, ["batch", "total"])]
    outs = [("logits", f, ["batch", "seq", 8]), ("present.0.key", f, cache), ("present.0.value", f, cache)]
    unpaired = _graph(tmp_path / "unpaired.onnx", base + [("past_key_values.0.key", f, cache)], outs)
    with pytest.raises(LayoutError, match="cache tensors missing: past_key_values.0.value"):
        detect_layout(unpaired)
    extra = _graph(tmp_path / "extra.onnx", base + [("past_key_values.0.key", f, cache),
                                                      ("past_key_values.0.value", f, cache),
                                                      ("token_type_ids", i, ["batch", "seq"])], outs)
    with pytest.raises(LayoutError, match="inputs onnxbench cannot feed: token_type_ids"):
        detect_layout(extra)
    no_config = builder_layout_file(tmp_path / "bare", write_config=False)
    with pytest.raises(LayoutError, match=r"axis 3 \(d_head\) is symbolic .* genai_config.json"):
        detect_layout(no_config)


def test_position_ids_and_padding_conversions():
    mask = np.array([[1, 1, 1, 1], [0, 0, 1, 1]])
    assert position_ids(mask).tolist() == [[0, 1, 2, 3], [1, 1, 0, 1]]  # transformers: padding gets 1
    ids = np.array([[5, 6, 7, 8], [0, 0, 3, 4]])
    right, right_mask = left_to_right(ids, mask)
    assert right.tolist() == [[5, 6, 7, 8], [3, 4, 0, 0]] and right_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


@pytest.mark.parametrize("name", ["llama-tiny", "tiny"])
def test_optimum_layout_greedy_decode_equals_the_torch_reference(optimum_files, name):
    model, path = optimum_files[name]
    session = runtimes.get("ort-cpu").open(read_artifact(path))
    ids, mask = _prompts()
    tokens, logits = _generate(session, ids, mask)
    ref = greedy_generate(model, torch.from_numpy(ids), NEW, torch.from_numpy(mask))
    np.testing.assert_array_equal(tokens, ref.tokens.numpy())
    np.testing.assert_allclose(logits, ref.logits.numpy(), atol=1e-4, rtol=1e-4)


def test_a_loop_feeding_positions_without_the_padding_is_caught(optimum_files, monkeypatch):
    """Planted fault: positions counted from the start of the row, padding included (what a loop that ignores
    the mask would feed): the padded row's logits leave the reference, the unpadded row's do not. On GPT-2's
    learned positions; RoPE (the Llama file) is invariant to shifting every position of a row by the same amount,
    so there the shift is harmless (measured: 7.7e-7)."""
    model, path = optimum_files["tiny"]
    monkeypatch.setattr(decode_module, "position_ids",
                        lambda mask: np.broadcast_to(np.arange(mask.shape[1]), mask.shape).copy())
    session = runtimes.get("ort-cpu").open(read_artifact(path))
    ids, mask = _prompts()
    _, logits = _generate(session, ids, mask)
    ref = greedy_generate(model, torch.from_numpy(ids), NEW, torch.from_numpy(mask)).logits.numpy()
    assert np.abs(logits[0] - ref[0]).max() < 1e-4
    assert np.abs(logits[1] - ref[1]).max() > 1e-2


def test_llama_family_ort_loop_sizes_its_cache_by_the_kv_heads(cache_dir):
    """llama-tiny has 2 K/V heads for 4 query heads: the cache buffers are n_kv_heads wide (n_heads-wide ones
    were refused by ORT: 'Got: 4 Expected: 2')."""
    model = perturbed("llama-tiny", seed=0)
    artifact = to_onnx(model.config, seed=0, part="decoder-with-past", cache_dir=cache_dir)
    session = runtimes.get("ort-cpu").open(artifact)
    ids, mask = _prompts()
    tokens, logits = _generate(session, ids, mask)
    from onnxbench.models import build

    ref = greedy_generate(build(model.config, 0), torch.from_numpy(ids), NEW, torch.from_numpy(mask))
    np.testing.assert_array_equal(tokens, ref.tokens.numpy())
    np.testing.assert_allclose(logits, ref.logits.numpy(), atol=1e-4, rtol=1e-4)


def test_a_request_beyond_the_files_vocabulary_or_context_is_refused_before_work(optimum_files, tmp_path):
    session = runtimes.get("ort-cpu").open(read_artifact(optimum_files["llama-tiny"][1]))
    ids, mask = _prompts()
    with pytest.raises(GenerationError, match=r"token ids must lie in \[0, 512\)"):
        session.decoder(ids + 512, mask, 4)
    built = runtimes.get("ort-cpu").open(read_artifact(builder_layout_file(tmp_path / "b")))
    with pytest.raises(GenerationError, match="max_positions=256"):  # genai_config.json's context_length
        built.decoder(ids % 64, mask, 250)


def test_a_builder_layout_file_generates_through_the_in_place_loop(tmp_path):
    """The builder's one-block file: the loop binds one buffer per cache tensor as past and present, right-pads
    the left-padded prompts, and every step's token and logits equal the file's own unoptimized recomputation of
    the sequence (the reference of a foreign file, which right-pads too)."""
    from onnxbench.runtimes.ort_decode import OrtInPlaceDecodeLoop

    artifact = read_artifact(builder_layout_file(tmp_path / "b"))
    ids, mask = _prompts(vocab=64)
    with runtimes.get("ort-cpu").open(artifact) as session:
        loop = session.decoder(ids, mask, NEW)
        assert isinstance(loop, OrtInPlaceDecodeLoop) and len(loop.cache) == 2
        tokens, logits = _generate(session, ids, mask)
    expected = OnnxFileReference(artifact).generation_expected(ids, mask, tokens, "fp32").outputs["logits"]
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(tokens, expected.argmax(-1))


def test_builder_layout_reference_right_pads_the_rows(tmp_path):
    """The reference recomputes a sequence of the builder's graph right-padded (GroupQueryAttention counts valid
    keys from position 0): a padded row's logits equal the same row run alone without padding; fed left-padded
    (planted: the layout told it needs no right padding) they do not."""
    artifact = read_artifact(builder_layout_file(tmp_path / "b"))
    ids, mask = _prompts(vocab=64)
    tokens = np.random.default_rng(1).integers(0, 64, (2, 5))
    padded = OnnxFileReference(artifact).generation_expected(ids, mask, tokens, "fp32")
    alone = OnnxFileReference(artifact).generation_expected(ids[1:, 4:], mask[1:, 4:], tokens[1:], "fp32")
    assert padded.outputs["logits"].shape == (2, 5, 64)
    np.testing.assert_allclose(padded.outputs["logits"][1], alone.outputs["logits"][0], atol=1e-5)
    assert "com.microsoft" in padded.note  # no float64 evaluation of contrib ops: said, not hidden
    import onnxbench.export.decoder_layout as layouts

    left = layouts.detect_layout(artifact.path).with_(right_padding=False)
    feeds = left.forward_feeds(np.concatenate([ids, tokens[:, :4]], 1),
                               np.concatenate([mask, np.ones((2, 4), np.int64)], 1))
    session = runtimes.get("ort-cpu").open(artifact, RuntimeOptions(extra={"graph_optimization_level": "disable"}))
    wrong = session.run(feeds)["logits"][:, 9:]
    assert np.abs(wrong[1] - alone.outputs["logits"][0]).max() > 1e-2


def test_tensorrt_profiles_find_the_cache_axes_of_any_exporter():
    specs = [TensorSpec("input_ids", "int64", ("batch_size", "sequence_length")),
             TensorSpec("attention_mask", "int64", ("batch_size", "past_sequence_length + sequence_length")),
             TensorSpec("position_ids", "int64", ("batch_size", "sequence_length")),
             TensorSpec("past_key_values.0.key", "float32", ("batch_size", 2, "past_sequence_length", 16))]
    ranges = {"batch": (1, 2, 2), "sequence": (1, 1, 8), **generation_ranges([(8, 4)])}
    profile = input_profile(specs, ranges)
    assert profile["attention_mask"].min == (1, 8) and profile["attention_mask"].max == (2, 11)
    assert profile["past_key_values.0.key"].min == (1, 2, 0, 16) and profile["past_key_values.0.key"].max == (
        2, 2, 10, 16)
    assert profile["position_ids"].max == (2, 8)


def test_genai_config_gives_the_vocabulary_when_the_graph_does_not(tmp_path):
    path = builder_layout_file(tmp_path / "b")
    model = onnx.load(str(path))
    model.graph.output[0].type.tensor_type.shape.dim[2].dim_param = "vocab"
    onnx.save(model, str(path))
    assert detect_layout(path).vocab_size == 64
    config = json.loads((tmp_path / "b" / "genai_config.json").read_text())
    del config["model"]["vocab_size"]
    (tmp_path / "b" / "genai_config.json").write_text(json.dumps(config))
    path.touch()  # a new file version: the layout is read again
    assert detect_layout(path).vocab_size is None
