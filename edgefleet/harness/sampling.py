"""Check a fitted memory model against measured training steps.

``checkpointing.execution.profile_sizes`` profiles a model at several sizes and fits its memory
model; ``check_memory_model`` then measures real training steps at sizes the model was not fitted
on, with the same meter as the profiler, and sets each beside the peak predicted from the memory
model alone:

- store-all: plain ``loss.backward()`` on the unsplit model;
- optimal: the persistent DP's schedule for a budget of half the predicted store-all peak, solved
  on the predicted chain and run by the executor on the real stages (where no schedule fits in
  half, the least budget that does), so the prediction is checked under recomputation too.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from checkpointing.execution.profile_sizes import (
    Progress,
    SamplingError,
    check_sizes,
    sample_batch,
    split_stages,
    training_model,
)
from checkpointing.execution.split import Stage
from checkpointing.execution.steps import (
    LossFn,
    Step,
    activation_peak_bytes,
    plain_step,
    schedule_step,
    step_time_s,
)
from checkpointing.planning.chain import Chain
from checkpointing.planning.memory_model import MemoryModel
from checkpointing.planning.simulate import simulate
from checkpointing.planning.solvers.baselines import store_all
from checkpointing.planning.solvers.persistent import (
    DEFAULT_SLOTS,
    PersistentSolution,
    min_budget,
    solve_persistent,
)
from edgefleet.harness.benchmark import OPTIMAL, STORE_ALL

OPTIMAL_FRACTION = 0.5
"""Budget of the optimal schedule checked, as a fraction of the predicted store-all peak."""

# Where half the predicted peak is below what any schedule needs, from the least that does up.
_BUDGET_STEP = 0.01
_BUDGET_STEPS = 50


@dataclass(frozen=True)
class HeldOutCase:
    """One training step at a size the memory model was not fitted on."""

    image_size: int
    batch_size: int
    strategy: str
    budget_bytes: int | None
    """The optimal schedule's budget; ``None`` for store-all."""
    predicted_peak_bytes: int
    measured_peak_bytes: int
    predicted_time_s: float
    """The simulated makespan on the predicted chain."""
    measured_time_s: float
    """Fastest of the timed steps (noise on a shared machine only ever adds time)."""

    @property
    def error(self) -> float:
        """Predicted peak relative to measured, minus one (positive: on the safe side)."""
        return self.predicted_peak_bytes / max(self.measured_peak_bytes, 1) - 1

    @property
    def time_error(self) -> float:
        """Predicted step time relative to measured, minus one."""
        return self.predicted_time_s / self.measured_time_s - 1

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "error": self.error, "time_error": self.time_error}


def check_memory_model(
    memory_model: MemoryModel,
    batch_sizes: Sequence[int],
    image_sizes: Sequence[int],
    seed: int = 0,
    *,
    slots: int = DEFAULT_SLOTS,
    time_repeats: int = 2,
    device: str = "cpu",
    progress: Progress | None = None,
) -> list[HeldOutCase]:
    """Measure store-all and an optimal schedule at every size; pair each with its prediction.

    Each step's peak is measured once with the meter, its time as the fastest of
    ``time_repeats`` steps without it (the meter slows operators), after an untimed one.
    """
    check_sizes(batch_sizes, image_sizes)
    if time_repeats < 1:
        raise SamplingError(f"time_repeats must be at least 1, got {time_repeats}")
    report = progress or (lambda _what, _done, _total: None)
    target = torch.device(device)
    model = training_model(memory_model.model, memory_model.num_classes, seed, target)
    cases: list[HeldOutCase] = []
    total = len(batch_sizes) * len(image_sizes)
    for image_size in image_sizes:
        stages: list[Stage] | None = None
        for batch_size in batch_sizes:
            report("measuring steps", len(cases) // 2, total)
            num_classes = memory_model.num_classes
            inputs, loss_fn = sample_batch(batch_size, image_size, num_classes, seed, target)
            if stages is None:
                stages = split_stages(model, inputs, memory_model.stage_names, image_size)
            chain = memory_model.predict(batch_size, image_size)
            store = simulate(chain, store_all(chain.length))
            budget, solution = _optimal_within(chain, OPTIMAL_FRACTION * store.peak, slots)
            assert solution.schedule is not None, "_optimal_within returns a feasible solution"
            runs = (
                (STORE_ALL, None, store, plain_step(model)),
                (
                    OPTIMAL,
                    budget,
                    solution,
                    schedule_step([stage.module for stage in stages], solution.schedule),
                ),
            )
            for strategy, budget_bytes, predicted, step in runs:
                peak_bytes = activation_peak_bytes(model, step, inputs, loss_fn, seed)
                cases.append(
                    HeldOutCase(
                        image_size=image_size,
                        batch_size=batch_size,
                        strategy=strategy,
                        budget_bytes=None if budget_bytes is None else int(budget_bytes),
                        predicted_peak_bytes=math.ceil(predicted.peak),
                        measured_peak_bytes=peak_bytes,
                        predicted_time_s=predicted.makespan,
                        measured_time_s=_fastest_step_s(
                            model, step, inputs, loss_fn, seed, time_repeats
                        ),
                    )
                )
    report("measuring steps", total, total)
    return cases


def summarise(cases: Sequence[HeldOutCase]) -> dict[str, float]:
    """Median and largest absolute relative error of the peaks and of the step times."""
    if not cases:
        raise SamplingError("no cases to summarise")
    errors = [abs(case.error) for case in cases]
    time_errors = [abs(case.time_error) for case in cases]
    return {
        "median_abs_err": statistics.median(errors),
        "max_abs_err": max(errors),
        "median_abs_time_err": statistics.median(time_errors),
        "max_abs_time_err": max(time_errors),
    }


def _optimal_within(chain: Chain, budget: float, slots: int) -> tuple[float, PersistentSolution]:
    """The DP's schedule within ``budget`` or, where none fits, within the least budget that does.

    Sizes are rounded up to whole slots, so the chain's exact minimum may need a little more.
    """
    solution = solve_persistent(chain, budget, slots)
    if solution.feasible:
        return budget, solution
    budget = max(budget, min_budget(chain))
    for _ in range(_BUDGET_STEPS):
        solution = solve_persistent(chain, budget, slots)
        if solution.feasible:
            return budget, solution
        budget *= 1 + _BUDGET_STEP
    raise SamplingError(f"no schedule fits even in {budget:.0f} bytes with {slots} slots")


def _fastest_step_s(
    model: nn.Module, step: Step, inputs: torch.Tensor, loss_fn: LossFn, seed: int, repeats: int
) -> float:
    # The first step is untimed: the allocator's state then belongs to this step.
    step_time_s(model, step, inputs, loss_fn, seed)
    return min(step_time_s(model, step, inputs, loss_fn, seed) for _ in range(repeats))
