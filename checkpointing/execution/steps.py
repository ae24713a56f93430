"""One measured training step: the definitions every benchmark and check shares.

A step is forward, loss and backward on a batch, starting from zeroed (allocated) gradient
buffers and a fixed seed, so that strategies compared side by side compute the same thing. Its
activation peak is the quantity docs/checkpointing.md defines: peak live tensor bytes during the
step above those at its start, plus the input batch (allocated before the step, yet counted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from checkpointing.execution.execute import run_schedule
from checkpointing.execution.meter import memory_meter
from checkpointing.planning.schedule import Schedule

LossFn = Callable[[torch.Tensor], torch.Tensor]
Step = Callable[[torch.Tensor, LossFn], object]
"""``step(inputs, loss_fn)``: forward, loss and backward, gradients into ``.grad``."""


def storage_bytes(tensor: torch.Tensor) -> int:
    return int(tensor.untyped_storage().nbytes())


def unique_storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the tensors' storages, each storage once."""
    storages = {t.untyped_storage().data_ptr(): storage_bytes(t) for t in tensors}
    return sum(storages.values())


def plain_step(model: nn.Module) -> Step:
    def step(x: torch.Tensor, loss: LossFn) -> torch.Tensor:
        value = loss(model(x))
        value.backward()
        return value.detach()

    return step


def schedule_step(modules: Sequence[nn.Module], schedule: Schedule) -> Step:
    def step(x: torch.Tensor, loss: LossFn) -> torch.Tensor:
        return run_schedule(modules, schedule, x, loss)

    return step


def fresh_step(model: nn.Module, seed: int) -> None:
    """Zeroed gradient buffers and the same random numbers, as every measured step starts."""
    for parameter in model.parameters():
        assert parameter.grad is not None, "gradient buffers are allocated before any step"
        parameter.grad.zero_()
    torch.manual_seed(seed)


def activation_peak_bytes(
    model: nn.Module, step: Step, inputs: torch.Tensor, loss_fn: LossFn, seed: int
) -> int:
    """The step's activation peak, measured by the device's meter."""
    fresh_step(model, seed)
    with memory_meter(inputs.device) as meter:
        start_bytes = meter.live_bytes
        meter.reset_peak()
        step(inputs, loss_fn)
        peak_bytes = meter.peak_bytes
    return peak_bytes - start_bytes + storage_bytes(inputs)


def step_time_s(
    model: nn.Module, step: Step, inputs: torch.Tensor, loss_fn: LossFn, seed: int
) -> float:
    """Wall time of one step (synchronised with the device)."""
    fresh_step(model, seed)
    _synchronise(inputs.device)
    started = time.perf_counter()
    step(inputs, loss_fn)
    _synchronise(inputs.device)
    return time.perf_counter() - started


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
