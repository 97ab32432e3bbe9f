"""``python -m onnxbench.cli``: the same as the ``onnxbench`` command."""

from . import app

app()
