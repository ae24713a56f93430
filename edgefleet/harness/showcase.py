"""Training side by side: the optimal schedule under a budget against plain autograd.

Two copies of one model, same batches, same seeds, SGD with momentum: after every step the
weights must be identical, because the executor reproduces plain autograd's gradients, BatchNorm
statistics and dropout masks.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from checkpointing.execution.models import build_model, cross_entropy_loss
from checkpointing.execution.profile import profile_stages
from checkpointing.execution.split import split_model
from checkpointing.execution.steps import LossFn, activation_peak_bytes, fresh_step, schedule_step
from checkpointing.planning.simulate import simulate
from checkpointing.planning.solvers.baselines import store_all
from checkpointing.planning.solvers.persistent import min_budget, solve_persistent


@dataclass(frozen=True)
class SideBySide:
    steps: int
    budget_bytes: int
    predicted_peak_bytes: int
    measured_peak_bytes: int
    losses_plain: tuple[float, ...]
    losses_optimal: tuple[float, ...]
    max_weight_diff: float
    """Largest absolute difference of any parameter or buffer after the last step."""


def train_side_by_side(
    model_name: str,
    image_size: int,
    batch_size: int,
    budget_fraction: float,
    steps: int,
    num_classes: int = 1000,
    seed: int = 0,
) -> SideBySide:
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0 < budget_fraction <= 1:
        raise ValueError(f"budget fraction must be in (0, 1], got {budget_fraction}")
    torch.manual_seed(seed)
    plain = build_model(model_name, num_classes).train()
    checkpointed = copy.deepcopy(plain)
    batches = [
        (
            torch.randn(batch_size, 3, image_size, image_size),
            torch.randint(0, num_classes, (batch_size,)),
        )
        for _ in range(steps)
    ]
    for model in (plain, checkpointed):
        for parameter in model.parameters():
            parameter.grad = torch.zeros_like(parameter)
    stages = split_model(checkpointed, batches[0][0])
    modules = [stage.module for stage in stages]
    chain = profile_stages(modules, batches[0][0], cross_entropy_loss(batches[0][1])).chain
    budget = int(budget_fraction * simulate(chain, store_all(chain.length)).peak)
    # A small model may not shrink that far: then train at the least it can (plus rounding room).
    budget = max(budget, math.ceil(min_budget(chain) * 1.01))
    solution = solve_persistent(chain, budget)
    assert solution.feasible and solution.schedule is not None, "a budget above the minimum fits"
    plain_optimizer = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9)
    optimal_optimizer = torch.optim.SGD(checkpointed.parameters(), lr=0.05, momentum=0.9)
    losses_plain: list[float] = []
    losses_optimal: list[float] = []
    measured_peak = 0
    optimal = schedule_step(modules, solution.schedule)

    def optimal_recording_loss(x: torch.Tensor, loss: LossFn) -> None:
        losses_optimal.append(round(torch.as_tensor(optimal(x, loss)).item(), 4))

    for step, (inputs, targets) in enumerate(batches):
        loss_fn = cross_entropy_loss(targets)
        fresh_step(plain, seed + step)
        loss = loss_fn(plain(inputs))
        loss.backward()
        plain_optimizer.step()
        losses_plain.append(round(loss.item(), 4))

        peak = activation_peak_bytes(
            checkpointed, optimal_recording_loss, inputs, loss_fn, seed + step
        )
        measured_peak = max(measured_peak, peak)
        optimal_optimizer.step()
    difference = max(
        (a - b).abs().max().item()
        for a, b in zip(
            [*plain.parameters(), *plain.buffers()],
            [*checkpointed.parameters(), *checkpointed.buffers()],
            strict=True,
        )
    )
    return SideBySide(
        steps=steps,
        budget_bytes=budget,
        predicted_peak_bytes=int(solution.peak),
        measured_peak_bytes=measured_peak,
        losses_plain=tuple(losses_plain),
        losses_optimal=tuple(losses_optimal),
        max_weight_diff=float(difference),
    )
