"""Run the real model for its memory model: profiles to fit on, measured peaks to check against.

``profile_samples`` profiles one model at several batch and image sizes (one model object, split
once per image size) and ``fit_model`` fits a ``MemoryModel`` on them. ``check_memory_model`` then
measures real training steps at sizes the model was not fitted on, with the same meter as the
profiler, and sets each beside the peak predicted from the memory model alone:

- store-all: plain ``loss.backward()`` on the unsplit model;
- optimal: the persistent DP's schedule for a budget of half the predicted store-all peak, solved
  on the predicted chain and run by the executor on the real stages (where no schedule fits in
  half, the least budget that does), so the prediction is checked under recomputation too.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from checkpointing.benchmark import OPTIMAL, STORE_ALL
from checkpointing.chain import Chain
from checkpointing.memory_model import MemoryModel, fit_memory_model
from checkpointing.models import build_model, cross_entropy_loss
from checkpointing.profile import ChainProfile, ProfileConfig, profile_stages
from checkpointing.simulate import simulate
from checkpointing.solvers.baselines import store_all
from checkpointing.solvers.persistent import (
    DEFAULT_SLOTS,
    PersistentSolution,
    min_budget,
    solve_persistent,
)
from checkpointing.split import Stage, split_model
from checkpointing.steps import (
    LossFn,
    Step,
    activation_peak_bytes,
    plain_step,
    schedule_step,
    step_time_s,
    unique_storage_bytes,
)

DEFAULT_BATCH_SIZES = (1, 2, 4)
DEFAULT_IMAGE_SIZES = (64, 128)
FAST_PROFILE = ProfileConfig(repeats=3)

OPTIMAL_FRACTION = 0.5
"""Budget of the optimal schedule checked, as a fraction of the predicted store-all peak."""

# Where half the predicted peak is below what any schedule needs, from the least that does up.
_BUDGET_STEP = 0.01
_BUDGET_STEPS = 50

Progress = Callable[[str, int, int], None]


class SamplingError(ValueError):
    """Sizes that cannot be sampled, or a model whose stages differ between image sizes."""


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


def profile_samples(
    model_name: str,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    image_sizes: Sequence[int] = DEFAULT_IMAGE_SIZES,
    num_classes: int = 1000,
    seed: int = 0,
    *,
    config: ProfileConfig = FAST_PROFILE,
    device: str = "cpu",
    progress: Progress | None = None,
) -> list[ChainProfile]:
    """Profiles of ``model_name`` at every batch size for every image size (image-major)."""
    model = _training_model(model_name, num_classes, seed, torch.device(device))
    return _profiles(model, batch_sizes, image_sizes, num_classes, seed, config, progress)


def fit_model(
    model_name: str,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    image_sizes: Sequence[int] = DEFAULT_IMAGE_SIZES,
    num_classes: int = 1000,
    seed: int = 0,
    *,
    config: ProfileConfig = FAST_PROFILE,
    device: str = "cpu",
    progress: Progress | None = None,
) -> MemoryModel:
    """Profile ``model_name`` at the given sizes and fit its memory model."""
    model = _training_model(model_name, num_classes, seed, torch.device(device))
    profiles = _profiles(model, batch_sizes, image_sizes, num_classes, seed, config, progress)
    return fit_memory_model(
        model_name,
        [(p.batch_size, p.input_shape[-1], p.chain) for p in profiles],
        profiles[0].stage_names,
        parameter_bytes=unique_storage_bytes(model.parameters()),
        buffer_bytes=unique_storage_bytes(model.buffers()),
        num_classes=num_classes,
    )


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
    _check_sizes(batch_sizes, image_sizes)
    if time_repeats < 1:
        raise SamplingError(f"time_repeats must be at least 1, got {time_repeats}")
    report = progress or (lambda _what, _done, _total: None)
    target = torch.device(device)
    model = _training_model(memory_model.model, memory_model.num_classes, seed, target)
    cases: list[HeldOutCase] = []
    total = len(batch_sizes) * len(image_sizes)
    for image_size in image_sizes:
        stages: list[Stage] | None = None
        for batch_size in batch_sizes:
            report("measuring steps", len(cases) // 2, total)
            inputs, loss_fn = _batch(batch_size, image_size, memory_model.num_classes, seed, target)
            if stages is None:
                stages = _split(model, inputs, memory_model.stage_names, image_size)
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


def _check_sizes(batch_sizes: Sequence[int], image_sizes: Sequence[int]) -> None:
    if not batch_sizes or not image_sizes:
        raise SamplingError("give at least one batch size and one image size")
    for name, values, least in (("batch size", batch_sizes, 1), ("image size", image_sizes, 8)):
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise SamplingError(f"every {name} must be an integer ≥ {least}, got {value!r}")


def _training_model(name: str, num_classes: int, seed: int, device: torch.device) -> nn.Module:
    """The model in train mode with its gradient buffers allocated, as a step starts."""
    torch.manual_seed(seed)
    model = build_model(name, num_classes).to(device).train()
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    return model


def _batch(
    batch_size: int, image_size: int, num_classes: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, LossFn]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    targets = torch.randint(0, num_classes, (batch_size,), generator=generator)
    return images.to(device), cross_entropy_loss(targets.to(device))


def _split(
    model: nn.Module, inputs: torch.Tensor, expected: Sequence[str] | None, image_size: int
) -> list[Stage]:
    stages = split_model(model, inputs)
    if expected is None:
        return stages
    names = [stage.name for stage in stages]
    for j, (name, wanted) in enumerate(zip(names, expected, strict=False)):
        if name != wanted:
            raise SamplingError(
                f"at image size {image_size}, stage {j} is {name!r} where the other sizes have "
                f"{wanted!r}; the model splits differently at different sizes"
            )
    if len(names) != len(expected):
        raise SamplingError(
            f"at image size {image_size} the model splits into {len(names)} stages where the "
            f"other sizes have {len(expected)}"
        )
    return stages


def _profiles(
    model: nn.Module,
    batch_sizes: Sequence[int],
    image_sizes: Sequence[int],
    num_classes: int,
    seed: int,
    config: ProfileConfig,
    progress: Progress | None,
) -> list[ChainProfile]:
    _check_sizes(batch_sizes, image_sizes)
    report = progress or (lambda _what, _done, _total: None)
    device = next(model.parameters()).device
    profiles: list[ChainProfile] = []
    names: tuple[str, ...] | None = None
    total = len(batch_sizes) * len(image_sizes)
    for image_size in image_sizes:
        stages: list[Stage] | None = None
        for batch_size in batch_sizes:
            report("profiling", len(profiles), total)
            inputs, loss_fn = _batch(batch_size, image_size, num_classes, seed, device)
            if stages is None:
                stages = _split(model, inputs, names, image_size)
                names = tuple(stage.name for stage in stages)
            profiles.append(
                profile_stages([s.module for s in stages], inputs, loss_fn, config, names)
            )
    report("profiling", total, total)
    return profiles


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
