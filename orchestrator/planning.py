"""Memory models from boards' profiles, and each board's plan for a job (no torch here).

A profile task asks one board of a hardware class to measure a model's stages at a few small
batch sizes and two image sizes around the job's; the fitted memory model
(``checkpointing.planning.memory_model``) then predicts the chain at any batch, so the planner
(``checkpointing.planning.planner``) gives every board of the class its batch and schedule
within its own budget without running anything there.

What the registry stores per (hardware class, model, image size) is ``MemoryModelPayload``: the
fitted model and the allocator overhead the board measured beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from checkpointing.planning.budget import Optimizer, ProcessFacts
from checkpointing.planning.chain import Chain, ChainError
from checkpointing.planning.memory_model import MemoryModel, MemoryModelError, fit_memory_model
from checkpointing.planning.planner import Plan, PlanError, PlanRequest, plan_training
from orchestrator.job_spec import JobSpec
from orchestrator.storage.records import Hardware

PROFILE_BATCH_SIZES = (1, 2)
_SMALLEST_PROFILE_IMAGE = 16
OOM_SHRINK = 0.8
"""After each out-of-memory report, a board's training share of its budget shrinks by this."""


def profile_image_sizes(image_size: int) -> tuple[int, int]:
    """Two image sizes that pin the per-pixel term: half the job's (at least 16 px) and the job's.

    Profiling at the job's own size makes the fit exact there; the smaller one keeps profiling
    cheap. A job below 32 px profiles at its size and twice it.
    """
    smaller = max(_SMALLEST_PROFILE_IMAGE, image_size // 2)
    if smaller >= image_size:
        return image_size, 2 * image_size
    return smaller, image_size


@dataclass(frozen=True)
class ProfileSample:
    batch_size: int
    image_size: int
    stage_names: tuple[str, ...]
    chain: Chain


_PAYLOAD_FORMAT = 2
"""Format 1 stored 0.0 for an overhead the board did not measure; format 2 stores null."""


@dataclass(frozen=True)
class MemoryModelPayload:
    memory_model: MemoryModel
    allocator_overhead_fraction: float | None
    """None: not measured by the board; the planner assumes the coordinator's default."""
    allocator_overhead_bytes: int
    model_library_bytes: int = 0
    """What loading the model's library (torchvision) costs the board's process; stored from
    format 2 on, absent (0) in payloads written before boards measured it."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _PAYLOAD_FORMAT,
                "memory_model": self.memory_model.to_dict(),
                "allocator_overhead_fraction": self.allocator_overhead_fraction,
                "allocator_overhead_bytes": self.allocator_overhead_bytes,
                "model_library_bytes": self.model_library_bytes,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> MemoryModelPayload:
        data = json.loads(text)
        fraction = data["allocator_overhead_fraction"]
        if data.get("format", 1) == 1 and fraction == 0.0:
            fraction = None
        return cls(
            memory_model=MemoryModel.from_dict(data["memory_model"]),
            allocator_overhead_fraction=None if fraction is None else float(fraction),
            allocator_overhead_bytes=int(data["allocator_overhead_bytes"]),
            model_library_bytes=int(data.get("model_library_bytes", 0)),
        )


class ProfileRejected(ValueError):
    """A profile that cannot be fitted; the message names what is wrong."""


def fit_profiles(
    model: str,
    samples: Sequence[ProfileSample],
    parameter_bytes: int,
    buffer_bytes: int,
    num_classes: int,
    wanted: Sequence[tuple[int, int]],
) -> MemoryModel:
    """The memory model of ``model`` from a profile task's samples (every wanted pair present)."""
    got = {(sample.batch_size, sample.image_size) for sample in samples}
    missing = sorted(set(wanted) - got)
    if missing:
        raise ProfileRejected(f"profiles: missing (batch size, image size) pairs {missing}")
    names = {sample.stage_names for sample in samples}
    if len(names) != 1:
        raise ProfileRejected("profiles: stage_names differ between profiles")
    try:
        return fit_memory_model(
            model,
            [(sample.batch_size, sample.image_size, sample.chain) for sample in samples],
            samples[0].stage_names,
            parameter_bytes=parameter_bytes,
            buffer_bytes=buffer_bytes,
            num_classes=max(num_classes, 1),
        )
    except (MemoryModelError, ChainError) as exc:
        raise ProfileRejected(f"profiles: {exc}") from None


def budget_bytes(hardware: Hardware, ram_fraction: float) -> int:
    """What the board's agent may use: its own figure, else a fraction of its RAM."""
    if hardware.memory_budget_bytes > 0:
        return hardware.memory_budget_bytes
    return int(hardware.ram_bytes * ram_fraction)


def planning_budget_bytes(budget: int, runtime_baseline: int, oom_count: int) -> int:
    """The budget planned for: after ``oom_count`` out-of-memory reports, less for training."""
    training = max(budget - runtime_baseline, 0)
    return runtime_baseline + int(training * OOM_SHRINK**oom_count)


@dataclass(frozen=True)
class NodePlanResult:
    fits: bool
    plan: Plan | None
    budget_bytes: int
    """The budget the plan was made for (the board's, shrunk after out-of-memory reports)."""
    shortfall_bytes: int = 0
    message: str = ""

    def plan_json(self) -> str | None:
        """The plan as the registry and the protocol keep it, with the budget it was made for."""
        if self.plan is None:
            return None
        return json.dumps({**self.plan.to_dict(), "budget_bytes": self.budget_bytes})


def plan_node(
    spec: JobSpec,
    hardware: Hardware,
    student: MemoryModelPayload,
    teacher: MemoryModelPayload | None,
    *,
    ram_fraction: float,
    oom_count: int = 0,
    default_overhead_fraction: float = 0.0,
) -> NodePlanResult:
    """The batch and schedule of one board for ``spec``; ``fits`` False with the shortfall."""
    budget = planning_budget_bytes(
        budget_bytes(hardware, ram_fraction), hardware.runtime_baseline_bytes, oom_count
    )
    fraction = student.allocator_overhead_fraction
    if fraction is None:
        fraction = default_overhead_fraction
    facts = ProcessFacts(
        runtime_baseline_bytes=hardware.runtime_baseline_bytes,
        allocator_overhead_fraction=fraction,
        allocator_overhead_bytes=student.allocator_overhead_bytes,
        # One library builds both models when both need one (torchvision): it loads once.
        model_library_bytes=max(
            student.model_library_bytes, teacher.model_library_bytes if teacher else 0
        ),
    )
    request = PlanRequest(
        image_size=spec.image_size,
        budget_bytes=budget,
        optimizer=Optimizer(spec.optimizer),
        batch_size=spec.batch_size,
    )
    try:
        plan = plan_training(
            student.memory_model,
            request,
            facts,
            teacher.memory_model if teacher is not None else None,
        )
    except PlanError as exc:
        return NodePlanResult(
            fits=False,
            plan=None,
            budget_bytes=budget,
            shortfall_bytes=exc.shortfall_bytes,
            message=str(exc),
        )
    return NodePlanResult(fits=True, plan=plan, budget_bytes=budget)


@dataclass(frozen=True)
class StoredPlan:
    """A board's plan as the registry keeps it (``NodePlanResult.plan_json``), typed: what the
    conductor assigns, the metrics show and the protocol carries."""

    batch_size: int
    accumulation_steps: int
    strategy: str
    sequence: tuple[str, ...]
    """The schedule's operations (``Fe_0``, ``Bwd_0``, ...)."""
    predicted_peak_bytes: int
    time_overhead: float
    throughput: float
    store_all_max_batch: int
    budget_bytes: int
    notes: tuple[str, ...]

    @classmethod
    def from_json(cls, plan_json: str) -> StoredPlan:
        data = json.loads(plan_json)
        assert isinstance(data, dict), "plans are stored as JSON objects"
        return cls(
            batch_size=int(data["batch_size"]),
            accumulation_steps=int(data["accumulation_steps"]),
            strategy=str(data["strategy"]),
            sequence=tuple(str(op) for op in data["sequence"]),
            predicted_peak_bytes=int(data["predicted_peak_bytes"]),
            time_overhead=float(data["time_overhead"]),
            throughput=float(data["throughput"]),
            store_all_max_batch=int(data["store_all_max_batch"]),
            budget_bytes=int(data.get("budget_bytes", 0)),
            notes=tuple(str(note) for note in data.get("notes", [])),
        )
