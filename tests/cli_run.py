"""Running the CLI as a user does: ``python -m onnxbench.cli`` in a subprocess, a wide terminal."""

import os
import subprocess
import sys

CLI = [sys.executable, "-m", "onnxbench.cli"]


def run_cli(*args, **kw):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"}, **kw)
