"""One result row, assembled from typed parts.

Each part is a dataclass whose field names are columns of :data:`onnxbench.schema.COLUMNS`; together the parts
(:data:`ROW_PARTS`) hold every column exactly once (a test checks it). Where each part comes from:

====================  ====================================================  ================================
part                  columns                                               filled by
====================  ====================================================  ================================
:class:`RunStamp`     schema version, run id, harness overhead, timestamp   the runner, per row written
:class:`CellKey`      cell id and the key columns                           the cell
:class:`Outcome`      status, reason                                        the worker (or the runner)
:class:`ModelInfo`    parameters, reference runtime, ONNX hash, export      the model source and its artifact
                      time, decoder layout
:class:`SessionInfo`  options, providers, attention placement, device,      the open session
                      build time
:class:`Timing`       latency statistics                                    the timing harness
:class:`Throughput`   sequences/s, tokens/s                                 the timing harness
:class:`GenerateColumns` TTFT, TPOT, decode tokens/s, end-to-end, first       the generation harness and its
                      diverging step                                        token check
:class:`AgreementColumns` errors, cosine, top-1, tolerances, pass/fail      the agreement check
:class:`ReferenceCheck` required atol, NaN/Inf matching, error vs float64,  the agreement check and the
                      noise floor, verdict, criteria, first diverging block divergence search
:class:`GpuStages`    H2D / compute / D2H split                             the timing harness (GPU sessions)
:class:`Resources`    peak RSS, device memory                               the worker process
:class:`Load`         other processes' CPU load while the cell ran          the worker process
:class:`Placement`    host, GPU name                                        the process that measured the cell
:class:`WorkColumns`  FLOPs, bytes, achieved rates, fractions of peak       the work model (ok rows)
====================  ====================================================  ================================

A new column goes into the schema and into exactly one part; :func:`assemble` is the only place that turns parts
into a row dict.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..schema import SCHEMA_VERSION, make_row
from .cells import Cell

if TYPE_CHECKING:
    from ..runtimes import Session


def now() -> str:
    """UTC time as ISO-8601 with seconds (the ``timestamp`` column, the header's ``started``/``finished``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunStamp:
    """What every row of one run shares, and when the row was written."""

    run_id: str
    harness_overhead_ms: float | None = None
    timestamp: str | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True)
class CellKey:
    """The cell: its id and key columns (:data:`onnxbench.schema.KEY_COLUMNS`)."""

    cell_id: str
    model: str
    part: str
    attention: str
    precision: str
    opset: int
    runtime: str
    threads: int
    config_id: str
    batch: int
    seq_len: int
    scenario: str = "prefill"
    new_tokens: int = 0
    padding: float = 0.0
    export_path: str = "onnxbench"

    @classmethod
    def of(cls, cell: Cell) -> CellKey:
        return cls(cell_id=cell.cell_id, **dataclasses.asdict(cell))


@dataclass(frozen=True)
class Outcome:
    """``ok`` | ``skipped`` | ``failed`` and why (empty when ok; a warning for a noisy ok cell)."""

    status: str
    reason: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """The model behind the cell: parameter count, reference runtime and decoder layout
    (:meth:`~onnxbench.benchmarks.plan.sources.base.ModelSource.decoder_layout`) from its source, the artifact's
    sha256 and export time (None where no artifact was made)."""

    n_params: int | None = None
    reference_runtime: str | None = None
    onnx_sha256: str | None = None
    export_s: float | None = None
    decoder_layout: str | None = None


@dataclass(frozen=True)
class SessionInfo:
    """The open session: options in force (JSON), execution providers requested and read back, where the
    attention ran, device, and session creation time (s)."""

    options: str | None = None
    provider_requested: str | None = None
    provider_actual: str | None = None
    attention_provider: str | None = None
    device: str | None = None
    build_s: float | None = None

    @classmethod
    def of(cls, session: Session, attention_provider: str | None = None, label: dict | None = None) -> SessionInfo:
        """``session``'s provenance now; ``label`` is merged into the options (e.g. the tuned config's name)."""
        return cls(options=json.dumps({**session.options, **(label or {})}, sort_keys=True, default=str),
                   provider_requested=session.provider_requested, provider_actual=session.provider_actual,
                   attention_provider=attention_provider, device=session.device, build_s=session.build_s)


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one cell, in milliseconds per inference (the timing harness,
    :mod:`onnxbench.benchmarks.measure.timing`)."""

    warmup_iters: int
    iters: int
    latency_ms_mean: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_ms_min: float
    latency_ms_std: float
    ci95_p50_lo_ms: float
    ci95_p50_hi_ms: float
    cov: float

    def as_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Throughput:
    """Sequences/s and tokens/s at the p50 latency."""

    throughput_seq_s: float | None = None
    throughput_tok_s: float | None = None

    @classmethod
    def of(cls, batch: int, seq_len: int, latency_ms: float) -> Throughput:
        """(B / p50, B·T / p50) for one inference of ``batch`` x ``seq_len`` tokens taking ``latency_ms`` ms; NaN
        for a latency that is not positive."""
        if not latency_ms or latency_ms <= 0:
            return cls(float("nan"), float("nan"))
        per_s = 1000.0 / latency_ms
        return cls(batch * per_s, batch * seq_len * per_s)


@dataclass(frozen=True)
class GenerateColumns:
    """A generate cell's timing and token check (:func:`onnxbench.benchmarks.measure.timing.measure_generation`,
    :mod:`onnxbench.benchmarks.scenarios.generate`): TTFT, TPOT percentiles and decode tokens/s, end-to-end ms, and
    the first
    step whose greedy token left the reference's."""

    ttft_ms: float | None = None
    tpot_ms_p50: float | None = None
    tpot_ms_p90: float | None = None
    tpot_ms_p99: float | None = None
    decode_tok_s: float | None = None
    e2e_ms: float | None = None
    first_divergent_step: int | None = None


@dataclass(frozen=True)
class AgreementColumns:
    """Agreement of the worst output with the reference (:class:`onnxbench.benchmarks.verify.agreement.Agreement`
    without the output name and the cosine bound; for a quantized row, :class:`onnxbench.benchmarks.
    quant_agreement.QuantAgreement`, with the KL divergence of the next-token distribution, nats)."""

    max_abs_err: float | None = None
    max_rel_err: float | None = None
    cosine: float | None = None
    top1_agree: float | None = None
    nan_count: int | None = None
    kl_mean: float | None = None
    kl_max: float | None = None
    rel_rms_err: float | None = None
    atol: float | None = None
    rtol: float | None = None
    agree: bool | None = None

    @classmethod
    def of(cls, agreement) -> AgreementColumns:
        """The columns of an agreement (:class:`~onnxbench.benchmarks.verify.agreement.Agreement` or
        :class:`~onnxbench.benchmarks.verify.quantized.QuantAgreement`): the fields it has (a float comparison
        leaves the KL columns empty)."""
        return cls(**{f.name: getattr(agreement, f.name, None) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class ReferenceCheck:
    """How the cell stands against its reference (docs/agreement.md): the atol that would have passed, NaN/Inf
    in the reference and matched, the error against float64 next to the noise floor and the factor allowed,
    the verdict (``pass`` | ``FAIL`` | ``reference`` | ``floor``), the criteria it applied, what the reference was,
    and the first block whose residual stream left the floor."""

    required_atol: float | None = None
    ref_nonfinite: int | None = None
    nonfinite_matched: int | None = None
    err_fp64: float | None = None
    noise_floor: float | None = None
    floor_ratio: float | None = None
    floor_factor: float | None = None
    verdict: str | None = None
    criteria: str | None = None
    reference_config: str | None = None
    first_divergent_block: int | None = None

    @classmethod
    def of(cls, agreement, verdict: str, reference_config: str,
           first_divergent_block: int | None = None) -> ReferenceCheck:
        floor = agreement.floor
        return cls(agreement.required_atol, agreement.ref_nonfinite, agreement.nonfinite_matched,
                   floor.err_fp64 if floor else None, floor.noise_floor if floor else None,
                   floor.floor_ratio if floor else None, floor.floor_factor if floor else None,
                   verdict, None, reference_config, first_divergent_block)


@dataclass(frozen=True)
class GpuStages:
    """Median ms of the host-to-device copy, device compute and device-to-host copy of one inference."""

    h2d_ms: float | None = None
    compute_ms: float | None = None
    d2h_ms: float | None = None


@dataclass(frozen=True)
class Resources:
    """Peak resident memory of the measuring process and device memory it held (MiB)."""

    peak_rss_mb: float | None = None
    device_mem_mb: float | None = None


@dataclass(frozen=True)
class Load:
    """Percent of all logical cores' time other processes used while the cell's measured part ran
    (:mod:`onnxbench.benchmarks.measure.load`); None where the window was too short to tell."""

    cpu_busy_pct: float | None = None


@dataclass(frozen=True)
class Placement:
    """Where the cell was measured: the host name and, for a GPU runtime, the GPU's name. Rows of one run can
    come from several hosts (a distributed executor, or merged shards: docs/scaling.md)."""

    host: str | None = None
    gpu_name: str | None = None

    @classmethod
    def here(cls, device: str = "cpu", device_id: int = 0) -> Placement:
        """This process's host, and the name of CUDA device ``device_id`` (as this process numbers it, i.e. after
        ``CUDA_VISIBLE_DEVICES``) when ``device`` is ``"cuda"``; asked of the driver, creating no CUDA context."""
        import socket

        gpu = None
        if device.startswith("cuda"):
            from ..runtimes.probes import gpu_name

            gpu = gpu_name(device_id)
        return cls(socket.gethostname(), gpu)


@dataclass(frozen=True)
class WorkColumns:
    """Work model of an ok cell (:mod:`onnxbench.benchmarks.measure.workmodel`)."""

    flops: float | None = None
    bytes_moved: float | None = None
    achieved_gflops: float | None = None
    achieved_gbs: float | None = None
    frac_peak_flops: float | None = None
    frac_peak_bw: float | None = None


#: Every part of a row; their fields together are exactly the schema's columns.
ROW_PARTS = (RunStamp, CellKey, Outcome, ModelInfo, SessionInfo, Timing, Throughput, GenerateColumns,
             AgreementColumns, ReferenceCheck, GpuStages, Resources, Load, Placement, WorkColumns)


@dataclass(frozen=True)
class Measurement:
    """What measuring one cell produced (in the worker): the outcome and whichever parts were measured.

    A skipped or failed cell has an :class:`Outcome` and, where a session was open, its :class:`SessionInfo`.
    """

    outcome: Outcome
    session: SessionInfo | None = None
    timing: Timing | None = None
    throughput: Throughput | None = None
    agreement: AgreementColumns | None = None
    reference_check: ReferenceCheck | None = None
    stages: GpuStages | None = None
    resources: Resources | None = None
    decode: GenerateColumns | None = None
    load: Load | None = None
    placement: Placement | None = None

    @classmethod
    def failed(cls, reason: str, session: SessionInfo | None = None) -> Measurement:
        return cls(Outcome("failed", reason), session)

    @classmethod
    def skipped(cls, reason: str) -> Measurement:
        return cls(Outcome("skipped", reason))

    @property
    def ok(self) -> bool:
        return self.outcome.status == "ok"

    def parts(self) -> tuple:
        """The measured parts that are present, in :data:`ROW_PARTS` order."""
        return tuple(p for p in (self.outcome, self.session, self.timing, self.throughput, self.decode,
                                 self.agreement, self.reference_check, self.stages, self.resources, self.load,
                                 self.placement)
                     if p is not None)

    def placed(self, placement: Placement) -> Measurement:
        """This measurement with ``placement``, unless it already has one (the innermost process knows best)."""
        return self if self.placement is not None else dataclasses.replace(self, placement=placement)


def assemble(*parts: Any) -> dict[str, Any]:
    """The row (every schema column, in schema order; absent parts leave their columns None) from ``parts``,
    instances of :data:`ROW_PARTS` (``None`` entries are ignored).

    Raises:
        TypeError: for an object that is not a row part, or two parts of the same type.
        ValueError: for a status outside :data:`onnxbench.schema.STATUSES` (from :func:`make_row`).
    """
    values: dict[str, Any] = {}
    seen: set[type] = set()
    for part in parts:
        if part is None:
            continue
        if type(part) not in ROW_PARTS or type(part) in seen:
            raise TypeError(f"{type(part).__name__} is not a row part or is given twice; parts: "
                            f"{', '.join(p.__name__ for p in ROW_PARTS)}")
        seen.add(type(part))
        values.update(dataclasses.asdict(part))
    return make_row(**values)
