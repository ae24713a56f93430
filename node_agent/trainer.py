"""Train tasks: one round of distillation on the board's own frames, with the planned schedule.

The student starts from the round's global weights; each optimizer step sums the gradients of
``accumulation_steps`` passes of ``batch_size`` frames drawn at random from the board's frames.
On every pass the teacher labels the batch without grad (soft targets at the task's temperature)
and the engine runs the student's forward and backward with the schedule the coordinator sent,
as sent. The update is the change of the weights over the round.

The memory guard reads the process's peak since ``reset_peak`` after every pass, counted as the
runtime baseline is (``measure_peak``: the high-water mark of the RSS): a pass that comes
within ``margin`` of the budget ends the task with ``MemoryGuardTripped`` (so does an allocation
failure), before the kernel's limit is met; the coordinator then re-plans the board.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from checkpointing.execution.models import build_model
from checkpointing.execution.split import SplitError, split_model
from checkpointing.execution.training import (
    LossFn,
    distillation_loss,
    forward_backward,
    is_out_of_memory,
    optimizer_for,
)
from checkpointing.planning.chain import Chain
from checkpointing.planning.schedule import Schedule
from checkpointing.planning.simulate import ScheduleError, simulate
from node_agent.arena import Arena, arena_step
from node_agent.weights import delta, from_bytes, load_into, to_bytes
from protos.edgefleet.v1 import fleet_pb2
from protos.vocabulary import OPTIMIZER, UnknownValue


class InvalidTask(ValueError):
    """A task this board cannot run as sent (a schedule for another chain, say)."""


class TaskStopped(Exception):
    """The task was cancelled, the agent is stopping, or the round's deadline passed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MemoryGuardTripped(Exception):
    def __init__(self, observed_peak_bytes: int, message: str) -> None:
        super().__init__(message)
        self.observed_peak_bytes = observed_peak_bytes


@dataclass(frozen=True)
class RoundResult:
    update: bytes
    num_samples: int
    measured_peak_bytes: int
    train_loss: float
    duration_s: float


def as_inputs(raw: torch.Tensor) -> torch.Tensor:
    """Frames (uint8, N×3×S×S) as the models take them: floats in [0, 1]."""
    return raw.float().div_(255.0)


def _schedule(task: fleet_pb2.TrainTask, student: nn.Module) -> tuple[list[nn.Module], Schedule]:
    example = torch.zeros(task.batch_size, 3, task.image_size, task.image_size)
    try:
        stages = [stage.module for stage in split_model(student, example)]
        schedule = Schedule.from_strings(len(stages), task.schedule)
        simulate(Chain.homogeneous(len(stages)), schedule)
    except (SplitError, ScheduleError, ValueError) as exc:
        raise InvalidTask(f"the schedule does not fit {task.model_name} here: {exc}") from None
    return stages, schedule


def train_round(
    task: fleet_pb2.TrainTask,
    global_weights: bytes,
    frames: torch.Tensor,
    teacher: nn.Module,
    *,
    limit_bytes: int,
    reset_peak: Callable[[], object],
    measure_peak: Callable[[], int],
    stop_reason: Callable[[], str | None],
    seed: int = 0,
    arena: Arena | None = None,
) -> RoundResult:
    """Train one round; ``stop_reason()`` is asked between passes (None: carry on). With the
    plan-aware ``arena`` preloaded, each pass is one of its steps: the same blocks every pass."""
    try:
        optimizer_name = OPTIMIZER.from_proto(task.optimizer)
    except UnknownValue:
        raise InvalidTask("the task names no optimizer this agent knows") from None
    if task.batch_size < 1 or task.accumulation_steps < 1 or task.local_steps < 1:
        raise InvalidTask("batch size, accumulation steps and local steps must be positive")
    started = time.perf_counter()
    student = build_model(task.model_name, task.num_classes or 1000)
    before = from_bytes(global_weights)
    load_into(student, before, "the round's weights")
    student.train()
    params = list(student.parameters())
    for parameter in params:
        parameter.grad = torch.zeros_like(parameter)
    stages, schedule = _schedule(task, student)
    optimizer = optimizer_for(optimizer_name, params, task.learning_rate)
    generator = torch.Generator().manual_seed(seed)
    temperature = task.temperature or 1.0
    losses: list[float] = []
    reset_peak()
    peak = 0
    try:
        for _ in range(task.local_steps):
            for _ in range(task.accumulation_steps):
                reason = stop_reason()
                if reason is not None:
                    raise TaskStopped(reason)
                with arena_step(arena):
                    picked = torch.randint(
                        0, frames.shape[0], (task.batch_size,), generator=generator
                    )
                    raw = frames[picked]
                    inputs = as_inputs(raw)
                    loss_fn = _averaged(distillation_loss(teacher, inputs, temperature), task)
                    losses.append(forward_backward(student, stages, schedule, inputs, loss_fn))
                    del raw, inputs, loss_fn
                peak = max(peak, measure_peak())
                if peak > limit_bytes:
                    raise MemoryGuardTripped(
                        peak, f"peak memory {peak} bytes passed the guard at {limit_bytes} bytes"
                    )
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        observed = max(peak, measure_peak())
        del error
        raise MemoryGuardTripped(observed, "an allocation failed during training") from None
    after = {name: value.detach() for name, value in student.state_dict().items()}
    update = to_bytes(delta(after, before))
    samples = task.local_steps * task.accumulation_steps * task.batch_size
    mean_loss = sum(losses) / len(losses) * task.accumulation_steps
    return RoundResult(
        update=update,
        num_samples=samples,
        measured_peak_bytes=max(peak, measure_peak()),
        train_loss=mean_loss,
        duration_s=time.perf_counter() - started,
    )


def _averaged(loss_fn: LossFn, task: fleet_pb2.TrainTask) -> LossFn:
    """Each of ``accumulation_steps`` passes contributes its share of the step's mean loss."""
    if task.accumulation_steps == 1:
        return loss_fn
    share = 1.0 / task.accumulation_steps

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return loss_fn(logits) * share

    return loss
