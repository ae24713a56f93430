"""Split, profile, solve and execute, end to end, against plain autograd on the whole model."""

import copy
import math

import pytest
import torch

from checkpointing.execution.execute import run_schedule
from checkpointing.execution.meter import memory_meter
from checkpointing.execution.models import build_model, cross_entropy_loss
from checkpointing.execution.profile import profile_stages
from checkpointing.execution.split import split_model
from checkpointing.planning.schedule import OpKind
from checkpointing.planning.simulate import simulate
from checkpointing.planning.solvers.baselines import store_all
from checkpointing.planning.solvers.persistent import min_budget, solve_persistent


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_optimal_schedule_trains_exactly_like_plain_autograd(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=10).train()
    reference = copy.deepcopy(model)
    inputs = torch.randn(2, 3, 48, 48)
    targets = torch.randint(0, 10, (2,))
    loss_fn = cross_entropy_loss(targets)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    stages = [stage.module for stage in split_model(model, inputs)]
    chain = profile_stages(stages, inputs, loss_fn).chain
    store_peak = simulate(chain, store_all(chain.length)).peak
    # Halfway between the least memory any schedule needs and store-all's: recomputation is
    # forced, and the schedule mixes every kind of operation.
    budget = (min_budget(chain) + store_peak) / 2
    solution = solve_persistent(chain, budget)
    assert solution.feasible and solution.schedule is not None
    assert (
        solution.schedule.count(OpKind.FORWARD_NOGRAD)
        + solution.schedule.count(OpKind.FORWARD_CHECK)
        > 0
    )

    torch.manual_seed(1)
    with memory_meter(inputs.device) as meter:
        start = meter.live_bytes
        meter.reset_peak()
        loss = run_schedule(stages, solution.schedule, inputs, loss_fn)
        measured = meter.peak_bytes - start + inputs.untyped_storage().nbytes()
    torch.manual_seed(1)
    expected_loss = loss_fn(reference(inputs))
    expected_loss.backward()

    assert torch.equal(loss, expected_loss.detach())
    for (label, got), want in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert want.grad is not None
        assert torch.equal(got.grad, want.grad), label
    for (label, got), want in zip(model.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(got, want), label
    assert measured <= budget
    assert math.isclose(measured, solution.peak, rel_tol=0.02)
