"""A cell of the benchmark matrix: one model part under one runtime at one (batch, seq_len); the axes a model's
cells are expanded from; shards of a matrix."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass

from ..errors import MatrixError


@dataclass(frozen=True)
class Cell:
    """One measurement: a model part under a runtime (at ``threads`` intra-op threads, 0: its default) at one
    (batch, seq_len).

    The fields are the key columns of a result row (:data:`onnxbench.schema.KEY_COLUMNS`); ``cell_id`` hashes
    them, so that a resumed run recognises the cells it already has.

    ``scenario`` is ``prefill`` (one forward pass over B x seq_len tokens) or ``generate`` (greedy decoding of
    ``new_tokens`` tokens after prompts of seq_len tokens, of which a fraction ``padding`` is left padding in the
    batch's last row: docs/generation.md).

    ``export_path`` is how the graph was made (:data:`onnxbench.export.paths.EXPORT_PATHS`): ``onnxbench``'s own
    export (the default), or another tool's from the same weights (docs/export.md, "Export paths").
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
    threads: int = 0
    export_path: str = "onnxbench"

    @property
    def artifact_key(self) -> tuple:
        """Cells with the same key share one exported artifact (the export path only where it is not the
        default, so that the groups, and so the shards, of a matrix without the axis stay as they were)."""
        key = (self.model, self.part, self.attention, self.precision, self.opset)
        return key if self.export_path == _DEFAULTS["export_path"] else (*key, self.export_path)

    @property
    def cell_id(self) -> str:
        fields = dataclasses.asdict(self)
        # fields added later hash only when they differ from their defaults, so that runs recorded before
        # them keep their cell ids (and resume)
        for name in ("scenario", "new_tokens", "padding", "threads", "export_path"):
            if fields[name] == _DEFAULTS[name]:
                del fields[name]
        payload = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @property
    def group_key(self) -> tuple:
        """Cells with the same key are measured by one session (one artifact on one runtime configuration)."""
        return (*self.artifact_key, self.runtime, self.config_id)


@dataclass(frozen=True)
class ScenarioAxes:
    """One scenario of the matrix as a model source expands it.

    Attributes:
        name: the scenario (the ``scenario`` key column).
        decoder: its cells run the model exported with its KV cache (part ``decoder-with-past``), not the
            matrix's parts.
        fields: the values of the scenario's own key columns, one mapping per combination (prefill: one empty
            mapping; generate: ``{"new_tokens": N, "padding": p}`` for every N and p).
    """

    name: str
    decoder: bool = False
    fields: tuple[dict, ...] = ({},)


@dataclass(frozen=True)
class CellAxes:
    """The matrix's axes as one model sees them (its per-model shapes applied): what a model source needs to list
    its cells (:meth:`onnxbench.benchmarks.plan.sources.ModelSource.cells`), and nothing else of the matrix."""

    attention: tuple[str, ...]
    precisions: tuple[str, ...]
    opsets: tuple[int, ...]
    runtimes: tuple[str, ...]
    parts: tuple[str, ...]
    batches: tuple[int, ...]
    seq_lens: tuple[int, ...]
    scenarios: tuple[ScenarioAxes, ...] = (ScenarioAxes("prefill"),)
    #: The matrix's padding fractions, for sources whose prefill cells take padding (ONNX files with an attention
    #: mask); the generate scenario lists its own in its ``fields``.
    paddings: tuple[float, ...] = (0.0,)
    #: The export paths of the model's graphs (:data:`onnxbench.export.paths.EXPORT_PATHS`), for sources that
    #: export a model (presets, checkpoints); ONNX files are run as they are.
    export_paths: tuple[str, ...] = ("onnxbench",)


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)``, 1 <= K <= N.

    Raises:
        MatrixError: (a ValueError) naming the expected form.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise MatrixError(f"shard {text!r}: expected K/N with 1 <= K <= N, e.g. 3/8 (Slurm: "
                          "$((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT)")
    return int(match[1]), int(match[2])


def shard_cells(cells: list[Cell], shard: str) -> list[Cell]:
    """The cells of shard ``K/N`` of ``cells`` (in their order): whole groups (:attr:`Cell.group_key`), so that a
    shard exports an artifact and opens a session once for all the group's shapes; the groups, sorted by key, are
    dealt round-robin, so shard K gets groups K-1, K-1+N, ... Deterministic for one matrix however its axes were
    ordered, every cell in exactly one of the N shards, group counts within one of each other
    (docs/scaling.md).

    Raises:
        MatrixError: for a malformed ``shard``.
    """
    k, n = parse_shard(shard)
    keys = sorted({c.group_key for c in cells}, key=lambda key: json.dumps(key))
    mine = set(keys[k - 1::n])
    return [c for c in cells if c.group_key in mine]


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Cell)}
