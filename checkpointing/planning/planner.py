"""Batch size and schedule for a board: the largest batch that fits, or the batch asked for.

The planner runs where the coordinator runs (no torch): it works on a memory model's predicted
chains and on the process terms of ``checkpointing.planning.budget``. For a batch ``B`` the budget
left to the activations is what remains once every other term is counted; the persistent DP then
gives the fastest schedule within it, and the simulator its peak.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from checkpointing.planning.budget import (
    ModelFacts,
    Optimizer,
    ProcessFacts,
    ProcessTerms,
    process_terms,
)
from checkpointing.planning.chain import Chain
from checkpointing.planning.schedule import Schedule
from checkpointing.planning.simulate import simulate
from checkpointing.planning.solvers.baselines import store_all
from checkpointing.planning.solvers.persistent import DEFAULT_SLOTS, min_budget, solve_persistent
from checkpointing.planning.units import format_size

STORE_ALL = "store_all"
OPTIMAL = "optimal"


class ChainModel(Protocol):
    """What the planner needs of a memory model
    (``checkpointing.planning.memory_model.MemoryModel``)."""

    @property
    def parameter_bytes(self) -> int: ...

    @property
    def buffer_bytes(self) -> int: ...

    def predict(self, batch_size: int, image_size: int) -> Chain: ...


class PlanError(ValueError):
    """Nothing fits even at batch 1 with full recomputation; ``shortfall_bytes``: by how much."""

    def __init__(self, message: str, shortfall_bytes: int) -> None:
        super().__init__(message)
        self.shortfall_bytes = shortfall_bytes


@dataclass(frozen=True)
class PlanRequest:
    image_size: int
    budget_bytes: int
    optimizer: Optimizer = Optimizer.SGD
    batch_size: int | None = None
    """The batch asked for; ``None`` asks for the largest that fits within ``max_overhead``."""
    max_overhead: float = 1.5
    """Largest step time per sample allowed, relative to store-all's at the same batch."""
    margin: float = 0.1
    """Fraction kept free of what the budget leaves above the runtime baseline: the margin is for
    the prediction's error, and only the training above the measured baseline is predicted (a
    share of the whole budget would eat most of a small board's training room)."""
    slots: int = DEFAULT_SLOTS
    max_batch_size: int = 4096

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"image size must be positive, got {self.image_size}")
        if self.budget_bytes < 1:
            raise ValueError(f"memory budget must be positive, got {self.budget_bytes}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not self.max_overhead >= 1:
            raise ValueError(f"max overhead must be at least 1, got {self.max_overhead}")
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")
        if self.slots < 1:
            raise ValueError(f"slots must be at least 1, got {self.slots}")
        if self.max_batch_size < 1:
            raise ValueError(f"max batch size must be at least 1, got {self.max_batch_size}")


@dataclass(frozen=True)
class Plan:
    batch_size: int
    accumulation_steps: int
    strategy: str
    schedule: Schedule
    terms: ProcessTerms
    time_overhead: float
    """Step time per sample relative to store-all's at the same batch (1.0: no recomputation)."""
    throughput: float
    """Predicted samples per second."""
    store_all_max_batch: int
    """The largest batch store-all could use within the same budget (0: not even one)."""
    notes: tuple[str, ...] = field(default=())

    @property
    def predicted_peak_bytes(self) -> int:
        return self.terms.total

    def to_dict(self) -> dict[str, object]:
        return {
            "batch_size": self.batch_size,
            "accumulation_steps": self.accumulation_steps,
            "strategy": self.strategy,
            "predicted_peak_bytes": self.predicted_peak_bytes,
            "terms": self.terms.as_dict(),
            "time_overhead": self.time_overhead,
            "throughput": self.throughput,
            "store_all_max_batch": self.store_all_max_batch,
            "notes": list(self.notes),
            "sequence": self.schedule.to_strings(),
        }


@dataclass(frozen=True)
class _Option:
    """The fastest schedule at one batch size, or why there is none."""

    batch_size: int
    chain: Chain
    activation_budget: float
    schedule: Schedule | None
    makespan: float
    activation_peak: float
    store_all_makespan: float
    store_all_fits: bool

    @property
    def feasible(self) -> bool:
        return self.schedule is not None

    @property
    def overhead(self) -> float:
        return self.makespan / self.store_all_makespan if self.store_all_makespan > 0 else 1.0


class _Planner:
    def __init__(
        self,
        student: ChainModel,
        request: PlanRequest,
        facts: ProcessFacts,
        teacher: ChainModel | None,
    ) -> None:
        self.student = student
        self.request = request
        self.facts = facts
        self.teacher = teacher
        self._options: dict[int, _Option] = {}

    def terms(self, batch_size: int, activation_peak: float) -> ProcessTerms:
        teacher_facts = None
        teacher_chain = None
        if self.teacher is not None:
            teacher_facts = ModelFacts(self.teacher.parameter_bytes, self.teacher.buffer_bytes)
            teacher_chain = self.teacher.predict(batch_size, self.request.image_size)
        return process_terms(
            student=ModelFacts(self.student.parameter_bytes, self.student.buffer_bytes),
            optimizer=self.request.optimizer,
            batch_size=batch_size,
            image_size=self.request.image_size,
            activation_peak_bytes=activation_peak,
            facts=self.facts,
            teacher=teacher_facts,
            teacher_chain=teacher_chain,
        )

    def usable_bytes(self) -> float:
        baseline = self.facts.runtime_baseline_bytes
        return baseline + (self.request.budget_bytes - baseline) * (1 - self.request.margin)

    def activation_budget(self, batch_size: int) -> float:
        """The largest activation peak (input included) that keeps the process within budget.

        Every term but the activations is fixed for a batch, and the allocator's overhead grows
        with all tensor bytes, so the total is affine in the activation peak: invert it.
        """
        without = self.terms(batch_size, 0.0)
        fixed = without.total - without.allocator_overhead - without.input_batch
        fixed -= self.facts.runtime_baseline_bytes
        room = self.usable_bytes() - self.facts.runtime_baseline_bytes
        room -= self.facts.allocator_overhead_bytes
        return room / (1 + self.facts.allocator_overhead_fraction) - fixed

    def option(self, batch_size: int) -> _Option:
        if batch_size in self._options:
            return self._options[batch_size]
        chain = self.student.predict(batch_size, self.request.image_size)
        budget = self.activation_budget(batch_size)
        store = simulate(chain, store_all(chain.length))
        schedule: Schedule | None = None
        makespan = math.inf
        peak = math.inf
        if store.peak <= budget:
            schedule, makespan, peak = store_all(chain.length), store.makespan, store.peak
        elif budget > 0 and min_budget(chain) <= budget:
            solution = solve_persistent(chain, budget, self.request.slots)
            if solution.feasible:
                schedule, makespan, peak = solution.schedule, solution.makespan, solution.peak
        option = _Option(
            batch_size=batch_size,
            chain=chain,
            activation_budget=budget,
            schedule=schedule,
            makespan=makespan,
            activation_peak=peak,
            store_all_makespan=store.makespan,
            store_all_fits=store.peak <= budget,
        )
        self._options[batch_size] = option
        return option

    def largest(self, accept: Callable[[_Option], bool]) -> int:
        """Largest batch (at most the request's cap) ``accept`` holds for; 0 if none.

        Memory per sample grows with the batch, so ``accept`` holds up to some batch and not
        beyond: gallop up, then bisect.
        """
        if not accept(self.option(1)):
            return 0
        cap = self.request.max_batch_size
        low = 1
        high = 2
        while high <= cap and accept(self.option(high)):
            low, high = high, high * 2
        high = min(high, cap + 1)
        while high - low > 1:
            middle = (low + high) // 2
            if accept(self.option(middle)):
                low = middle
            else:
                high = middle
        return low

    def plan(self, option: _Option, accumulation_steps: int, notes: list[str]) -> Plan:
        assert option.schedule is not None, "plans are made of feasible options only"
        return Plan(
            batch_size=option.batch_size,
            accumulation_steps=accumulation_steps,
            strategy=STORE_ALL if option.store_all_fits else OPTIMAL,
            schedule=option.schedule,
            terms=self.terms(option.batch_size, option.activation_peak),
            time_overhead=option.overhead,
            throughput=option.batch_size / option.makespan if option.makespan > 0 else math.inf,
            store_all_max_batch=self.largest(lambda o: o.store_all_fits),
            notes=tuple(notes),
        )

    def least_activation_budget(self, chain: Chain) -> float:
        """The least budget the DP finds a schedule in: the model's minimum plus slot rounding."""
        low = min_budget(chain)
        if solve_persistent(chain, low, self.request.slots).feasible:
            return low
        step = low * 1e-3
        high = low + step
        while not solve_persistent(chain, high, self.request.slots).feasible:
            step *= 2
            high = low + step
        for _ in range(20):
            middle = (low + high) / 2
            if solve_persistent(chain, middle, self.request.slots).feasible:
                high = middle
            else:
                low = middle
        return high

    def nothing_fits(self) -> PlanError:
        needed = self.least_activation_budget(self.option(1).chain)
        baseline = self.facts.runtime_baseline_bytes
        training = self.terms(1, needed).total - baseline
        # One byte over the exact quotient: the check (usable_bytes) multiplies back in floats.
        required = baseline + math.ceil(training / (1 - self.request.margin)) + 1
        shortfall = max(required - self.request.budget_bytes, 1)
        return PlanError(
            f"nothing fits in {format_size(self.request.budget_bytes)}, not even batch 1 with "
            f"full recomputation: that needs {format_size(required)} with a "
            f"{self.request.margin:.0%} margin, {format_size(shortfall)} more",
            shortfall,
        )


def plan_training(
    student: ChainModel,
    request: PlanRequest,
    facts: ProcessFacts,
    teacher: ChainModel | None = None,
) -> Plan:
    """The plan for one board; ``PlanError`` when nothing fits even at batch 1."""
    planner = _Planner(student, request, facts, teacher)
    if not planner.option(1).feasible:
        raise planner.nothing_fits()
    if request.batch_size is not None:
        wanted = planner.option(request.batch_size)
        if wanted.feasible:
            return planner.plan(wanted, 1, [])
        largest = planner.largest(lambda o: o.feasible)
        steps = math.ceil(request.batch_size / largest)
        per_step = math.ceil(request.batch_size / steps)
        note = (
            f"batch {request.batch_size} does not fit even with full recomputation; "
            f"{steps} accumulation steps of {per_step} reach it"
        )
        return planner.plan(planner.option(per_step), steps, [note])
    best = planner.largest(lambda o: o.feasible and o.overhead <= request.max_overhead)
    if best == 0:
        # Even batch 1 recomputes more than the bound allows: take batch 1 and say so.
        note = f"no batch stays within {request.max_overhead}x store-all's time per sample"
        return planner.plan(planner.option(1), 1, [note])
    return planner.plan(planner.option(best), 1, [])
