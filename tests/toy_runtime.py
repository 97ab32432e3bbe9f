"""A complete runtime in one file, as a plug-in would write it: ONNX's reference evaluator
(``onnx.reference.ReferenceEvaluator``, the pure-numpy implementation of the operator specs,
https://onnx.ai/onnx/api/reference.html) running the exported ONNX file.

It is slow (numpy, op by op) but real: it computes the logits from the graph, so its agreement with the torch
reference is a genuine check. Importing this module registers it (the one registry line at the bottom).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from onnxbench.export import ExportArtifact, TensorSpec
from onnxbench.runtimes import Runtime, RuntimeOptions, Session, TypedOptions, register


@dataclass(frozen=True)
class ReferenceEvaluatorOptions(TypedOptions):
    """``verbose``: ReferenceEvaluator's verbosity (0 silent .. 4 every intermediate result)."""

    verbose: int = 0


class ReferenceEvaluatorSession(Session):
    """``run`` feeds host numpy arrays to the evaluator and returns its outputs by graph output name."""

    runtime = "onnx-reference"
    provider_requested = provider_actual = "onnx.reference"
    device = "cpu"

    def __init__(self, artifact: ExportArtifact, typed: ReferenceEvaluatorOptions) -> None:
        super().__init__()
        start = time.perf_counter()
        model = onnx.load(str(artifact.path))
        self.evaluator = ReferenceEvaluator(model, verbose=typed.verbose)
        self._outputs = [o.name for o in model.graph.output]
        self._inputs = tuple(artifact.inputs)
        self.options = {"onnx": onnx.__version__, **typed.as_dict()}
        self.build_s = time.perf_counter() - start

    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.evaluator.run(None, feeds), strict=True))

    def close(self) -> None:
        self.evaluator = None


class OnnxReference(Runtime):
    """The ONNX reference evaluator on the CPU (numpy)."""

    name = "onnx-reference"
    device = "cpu"
    options_type = ReferenceEvaluatorOptions
    in_default_matrix = False  # op-by-op numpy: far too slow for the default matrix

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return True, f"onnx {onnx.__version__} ReferenceEvaluator"

    def _open(self, artifact: ExportArtifact, options: RuntimeOptions,
              typed: ReferenceEvaluatorOptions) -> Session:
        return ReferenceEvaluatorSession(artifact, typed)


register(OnnxReference)
