"""Checkpointing benchmark: store-all, ``checkpoint_sequential`` and the optimal schedule.

One run profiles the model, then measures real training steps of every strategy on the same
batch: the activation peak (as defined in docs/checkpointing.md, by the same meter the profiler
uses), the step time and the largest relative gradient difference from store-all's. Steps are
timed in interleaved rounds, so that drift hits every strategy alike, each timed step right after
an untimed one of the same strategy; the step time is the fastest of the repeats (noise on a
shared machine only ever adds time), the median is reported beside it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint_sequential as torch_checkpoint_sequential

from checkpointing.execution.models import build_model, cross_entropy_loss
from checkpointing.execution.profile import ProfileConfig, profile_stages
from checkpointing.execution.split import split_model
from checkpointing.execution.steps import (
    Step,
    activation_peak_bytes,
    plain_step,
    schedule_step,
    step_time_s,
)
from checkpointing.planning.chain import Chain
from checkpointing.planning.simulate import simulate
from checkpointing.planning.solvers.baselines import checkpoint_sequential, store_all
from checkpointing.planning.solvers.persistent import DEFAULT_SLOTS, min_budget, solve_persistent

STORE_ALL = "store_all"
CHECKPOINT_SEQUENTIAL = "checkpoint_sequential"
OPTIMAL = "optimal"

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BenchConfig:
    model: str
    image_size: int
    batch_size: int
    budgets: tuple[float, ...] = (0.5, 0.33, 0.25)
    """Fractions of store-all's measured activation peak."""
    repeats: int = 5
    """Timed steps per strategy (interleaved)."""
    slots: int = DEFAULT_SLOTS
    num_classes: int = 1000
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"image size must be at least 8 pixels, got {self.image_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not self.budgets:
            raise ValueError("give at least one budget fraction")
        for fraction in self.budgets:
            if not 0 < fraction <= 1:
                raise ValueError(f"budget fractions must be in (0, 1], got {fraction}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {self.repeats}")
        if self.slots < 1:
            raise ValueError(f"slots must be at least 1, got {self.slots}")


@dataclass(frozen=True)
class BenchRow:
    strategy: str
    segments: int | None
    budget_bytes: int | None
    predicted_peak_bytes: int
    measured_peak_bytes: int
    step_time_s: float
    """Fastest of the timed repeats."""
    step_time_median_s: float
    time_ratio: float
    max_grad_rel_diff: float
    predicted_time_s: float
    sequence_length: int

    @property
    def peak_error(self) -> float:
        """Measured peak relative to predicted, minus one."""
        return self.measured_peak_bytes / max(self.predicted_peak_bytes, 1) - 1


@dataclass(frozen=True)
class BenchResult:
    model: str
    image_size: int
    batch_size: int
    device: str
    num_stages: int
    profile_s: float
    rows: tuple[BenchRow, ...]
    min_budget_bytes: int
    """Least budget any schedule fits in (the model's exact minimum)."""
    infeasible_budgets: tuple[float, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["rows"] = [asdict(row) for row in self.rows]
        return data


@dataclass
class _Candidate:
    strategy: str
    segments: int | None
    budget_bytes: int | None
    predicted_peak_bytes: int
    predicted_time_s: float
    sequence_length: int
    step: Step
    times_s: list[float] = field(default_factory=list)
    measured_peak_bytes: int = 0
    max_grad_rel_diff: float = math.nan


def run_benchmark(config: BenchConfig, progress: Progress | None = None) -> BenchResult:
    report = progress or (lambda _what, _done, _total: None)
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    model = build_model(config.model, config.num_classes).to(device).train()
    inputs = torch.randn(config.batch_size, 3, config.image_size, config.image_size, device=device)
    targets = torch.randint(0, config.num_classes, (config.batch_size,), device=device)
    loss_fn = cross_entropy_loss(targets)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)

    report("splitting", 0, 1)
    stages = split_model(model, inputs)
    modules = [stage.module for stage in stages]
    report("profiling", 0, 1)
    started = time.perf_counter()
    profile = profile_stages(
        modules, inputs, loss_fn, ProfileConfig(), [stage.name for stage in stages]
    )
    profile_s = time.perf_counter() - started
    chain = profile.chain

    store = simulate(chain, store_all(chain.length))
    baseline = _Candidate(
        STORE_ALL,
        None,
        None,
        int(store.peak),
        store.makespan,
        chain.length * 2 + 1,
        plain_step(model),
    )
    baseline.measured_peak_bytes = activation_peak_bytes(
        model, baseline.step, inputs, loss_fn, config.seed
    )
    reference = _gradients(model)

    candidates = [baseline, *_sequential_candidates(chain, modules, store.peak)]
    infeasible: list[float] = []
    for fraction in config.budgets:
        budget = int(fraction * baseline.measured_peak_bytes)
        solution = solve_persistent(chain, budget, config.slots)
        if not solution.feasible or solution.schedule is None:
            infeasible.append(fraction)
            continue
        candidates.append(
            _Candidate(
                OPTIMAL,
                None,
                budget,
                int(solution.peak),
                solution.makespan,
                len(solution.schedule),
                schedule_step(modules, solution.schedule),
            )
        )

    for index, candidate in enumerate(candidates[1:], start=1):
        report("measuring memory", index, len(candidates))
        candidate.measured_peak_bytes = activation_peak_bytes(
            model, candidate.step, inputs, loss_fn, config.seed
        )
        candidate.max_grad_rel_diff = _max_relative_difference(_gradients(model), reference)
    baseline.max_grad_rel_diff = 0.0

    for repeat in range(config.repeats):
        report("timing steps", repeat, config.repeats)
        for candidate in candidates:
            # An untimed step first: the allocator's state (which blocks it keeps, when it maps
            # fresh pages) then belongs to this strategy, not to the one run before it.
            step_time_s(model, candidate.step, inputs, loss_fn, config.seed)
            elapsed = step_time_s(model, candidate.step, inputs, loss_fn, config.seed)
            candidate.times_s.append(elapsed)

    base_time = min(baseline.times_s)
    rows = tuple(
        BenchRow(
            strategy=c.strategy,
            segments=c.segments,
            budget_bytes=c.budget_bytes,
            predicted_peak_bytes=c.predicted_peak_bytes,
            measured_peak_bytes=c.measured_peak_bytes,
            step_time_s=min(c.times_s),
            step_time_median_s=statistics.median(c.times_s),
            time_ratio=min(c.times_s) / base_time,
            max_grad_rel_diff=c.max_grad_rel_diff,
            predicted_time_s=c.predicted_time_s,
            sequence_length=c.sequence_length,
        )
        for c in candidates
    )
    return BenchResult(
        model=config.model,
        image_size=config.image_size,
        batch_size=config.batch_size,
        device=str(device),
        num_stages=chain.length,
        profile_s=profile_s,
        rows=rows,
        min_budget_bytes=math.ceil(min_budget(chain)),
        infeasible_budgets=tuple(infeasible),
    )


def _sequential_step(modules: Sequence[nn.Module], segments: int) -> Step:
    sequential = nn.Sequential(*modules)

    def step(x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        # PyTorch's own implementation, as users run it (non-reentrant, RNG state preserved).
        output = torch_checkpoint_sequential(sequential, segments, x, use_reentrant=False)
        value = loss(output)
        value.backward()
        return value.detach()

    return step


def _sequential_candidates(
    chain: Chain, modules: Sequence[nn.Module], store_all_peak: float
) -> list[_Candidate]:
    """The segment counts worth running: lower peak than store-all and not dominated by another."""
    options = []
    for segments in range(2, chain.length + 1):
        simulation = simulate(chain, checkpoint_sequential(chain.length, segments))
        if simulation.peak < store_all_peak:
            options.append((simulation.peak, simulation.makespan, segments))
    frontier: list[_Candidate] = []
    for peak, makespan, segments in sorted(options, key=lambda o: (o[1], o[0])):
        if frontier and peak >= frontier[-1].predicted_peak_bytes:
            continue
        frontier.append(
            _Candidate(
                CHECKPOINT_SEQUENTIAL,
                segments,
                None,
                int(peak),
                makespan,
                len(checkpoint_sequential(chain.length, segments)),
                _sequential_step(modules, segments),
            )
        )
    return frontier


def _gradients(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def _max_relative_difference(
    grads: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]
) -> float:
    """Largest over parameters of max|g - g_ref| / max|g_ref| (0 where both are zero)."""
    worst = 0.0
    for grad, ref in zip(grads, reference, strict=True):
        scale = ref.abs().max().item()
        difference = (grad - ref).abs().max().item()
        if difference == 0:
            continue
        worst = max(worst, difference / scale if scale > 0 else math.inf)
    return worst
