"""A cell of the benchmark matrix: one model part under one runtime at one (batch, seq_len)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """One measurement: a model part under a runtime at one (batch, seq_len).

    The fields are the key columns of a result row (:data:`onnxbench.schema.KEY_COLUMNS`); ``cell_id`` hashes
    them, so that a resumed run recognises the cells it already has.
    """

    model: str
    attention: str
    precision: str
    opset: int
    runtime: str
    batch: int
    seq_len: int
    part: str = "model"
    config_id: str = "default"

    @property
    def artifact_key(self) -> tuple:
        """Cells with the same key share one exported artifact."""
        return (self.model, self.part, self.attention, self.precision, self.opset)

    @property
    def cell_id(self) -> str:
        payload = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]
