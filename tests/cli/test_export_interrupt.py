"""Ctrl-C during ``onnxbench export`` says what was kept, exits 130 (interrupted), and keeps what it says: an
interrupted export leaves nothing in the cache, an interrupted copy leaves the finished export in the cache and no
partial file at ``--out``."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from onnxbench.cli import app
from onnxbench.export import onnx_export


def _export(cache: Path, *extra: str):
    return CliRunner().invoke(app, ["export", "--preset", "tiny", "--exporter", "torchscript", "--cache-dir",
                                    str(cache), *extra])


def test_ctrl_c_during_the_export_keeps_nothing_and_says_so(tmp_path, monkeypatch):
    def interrupted(path, *args, **kwargs):
        path.write_bytes(b"half an export")  # what an export killed mid-write leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "_export_into", interrupted)
    result = _export(tmp_path / "cache")
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.stderr and "nothing was kept" in result.stderr, result.stderr
    artifacts = tmp_path / "cache" / "artifacts"
    assert not artifacts.exists() or not any(artifacts.iterdir()), list(artifacts.iterdir())
    assert "Traceback" not in result.output


def test_ctrl_c_during_the_copy_keeps_the_cached_export_and_says_where(tmp_path, monkeypatch):
    cache, out = tmp_path / "cache", tmp_path / "model.onnx"
    assert _export(cache).exit_code == 0  # the export, cached

    def interrupted(source, target, *args, **kwargs):
        Path(target).write_bytes(b"half a copy")  # a copy cut short
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export.shutil, "copyfile", interrupted)
    result = _export(cache, "--out", str(out))
    assert result.exit_code == 130, result.output
    (cached,) = (cache / "artifacts").glob("*/model.onnx")
    assert str(cached) in result.stderr and str(out) in result.stderr, result.stderr
    assert list(tmp_path.glob("model.onnx*")) == []  # neither the file nor a temporary copy
