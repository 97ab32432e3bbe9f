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

    ``scenario`` is ``prefill`` (one forward pass over B x seq_len tokens) or ``generate`` (greedy decoding of
    ``new_tokens`` tokens after prompts of seq_len tokens, of which a fraction ``padding`` is left padding in the
    batch's last row: docs/generation.md).
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
    scenario: str = "prefill"
    new_tokens: int = 0
    padding: float = 0.0

    @property
    def artifact_key(self) -> tuple:
        """Cells with the same key share one exported artifact."""
        return (self.model, self.part, self.attention, self.precision, self.opset)

    @property
    def cell_id(self) -> str:
        fields = dataclasses.asdict(self)
        # fields added later hash only when they differ from their defaults, so that runs recorded before
        # them keep their cell ids (and resume)
        for name in ("scenario", "new_tokens", "padding"):
            if fields[name] == _DEFAULTS[name]:
                del fields[name]
        payload = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Cell)}
