"""``onnxbench export``: the reference transformer to ONNX (cached), copied where asked."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import OnnxbenchError
from .console import INTERRUPTED, app, console, fail, first_line, note


@app.command()
def export(
    preset: str = typer.Option("tiny", help="model preset (tiny, small, gpt2-small, ...)"),
    attention: str = typer.Option(
        "decomposed", help="attention variant: decomposed | sdpa | onnx-attention (opset 23) | ort-fused | "
        "ort-gqa-inplace (decoder-with-past only)"),
    part: str = typer.Option("model", help="model (input_ids -> logits) | attention (block 0's attention)"),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | bf16"),
    opset: int = typer.Option(18, help="ONNX opset (supported range per exporter and attention: docs/export.md)"),
    exporter: str = typer.Option("dynamo", help="dynamo | torchscript"),
    seed: int = typer.Option(0, help="weight seed"),
    out: Path | None = typer.Option(None, help="copy model.onnx (and its external data) to this file, or into "
                                    "this existing folder; its folder must exist (default: print the cache path)"),
    cache_dir: Path | None = typer.Option(None, help="artifact cache (default ~/.cache/onnxbench)"),
    force: bool = typer.Option(False, help="export again even if cached"),
    overwrite: bool = typer.Option(False, help="replace --out even if it is a file that is not an onnxbench "
                                   "artifact"),
    checkpoint: Path | None = typer.Option(
        None, help="local GPT-2, Llama or Qwen2 checkpoint directory (config.json + model.safetensors) to take "
        "the shape and weights from instead of --preset/--seed"),
) -> None:
    """Export the reference transformer to ONNX (cached) and print where it is. Ctrl-C says what was kept and
    exits 130: an interrupted export leaves nothing (the cache publishes only finished artifacts), an interrupted
    copy leaves the finished export in the cache and no partial file at --out."""
    from ..benchmarks.plan.matrix import ATTENTION_VARIANTS
    from ..benchmarks.plan.sources import CheckpointSource, PresetSource
    from ..export.onnx_export import check_copy_target, copy_artifact, default_cache_dir

    if attention not in ATTENTION_VARIANTS:
        fail(f"unknown attention variant {attention!r}; known: {', '.join(ATTENTION_VARIANTS)}")
    target = None
    if out is not None:  # checked before exporting: a bad --out must not cost an export
        target = out / "model.onnx" if out.is_dir() else out
        try:
            check_copy_target(target, overwrite)
        except (FileNotFoundError, FileExistsError) as exc:
            fail(str(exc))
    try:
        source = (CheckpointSource.at(checkpoint, seed, exporter) if checkpoint is not None
                  else PresetSource.named(preset, seed, exporter))
        artifact = source.export(attention, precision, opset, part, cache_dir, force)
    except KeyboardInterrupt:
        note(f"interrupted during the export: nothing was kept (its temporary files were removed); the cache "
             f"{cache_dir or default_cache_dir()} holds only finished artifacts, as before")
        raise typer.Exit(INTERRUPTED) from None
    except OnnxbenchError:
        raise  # bad input: one line and exit 2, in _Commands
    except (KeyError, ValueError, FileNotFoundError) as exc:
        fail(str(exc.args[0]) if exc.args else str(exc))
    except Exception as exc:  # noqa: BLE001 - the exporter's own failure: one line (nothing was left in the cache)
        fail(f"export failed: {type(exc).__name__}: {first_line(exc)}", code=1)
    path = artifact.path
    if target is not None:
        try:
            path = copy_artifact(artifact.path, target, overwrite)[0]
        except KeyboardInterrupt:
            note(f"interrupted while copying to {target}: the export is kept in the cache at {artifact.path}; the "
                 f"copy did not finish (its temporary files were removed); run the command again to copy it (the "
                 "export is taken from the cache)")
            raise typer.Exit(INTERRUPTED) from None
        except FileExistsError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot write {target}: {exc.strerror or exc}")
    how = "cached" if artifact.cached else f"exported in {artifact.export_s:.1f} s"
    console.print(f"{path}  ({source.name}, {part}, {attention}, {precision}, opset {artifact.opset}, {how})")
