"""onnxbench: ONNX export and cross-runtime benchmark suite for a reference transformer."""

__version__ = "0.1.0"
