"""The pieces of a board's training step shared by the agent and the measured child process.

A step trains the student on one batch, either with plain autograd or with a checkpointing
schedule run by the engine; with a teacher, the loss is distillation from the teacher's soft
targets on the same batch (the teacher runs without grad inside the step, which is what the
planner's ``teacher`` term counts).
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional

from checkpointing.execution.execute import run_schedule
from checkpointing.planning.budget import OPTIMIZERS, Optimizer
from checkpointing.planning.schedule import Schedule

LossFn = Callable[[torch.Tensor], torch.Tensor]
SGD_MOMENTUM = 0.9
# torch's CPU allocator reports failure as a plain RuntimeError (not torch.OutOfMemoryError),
# so its message is the only way to tell it from a bug.
_CPU_ALLOCATOR_FAILURES = ("can't allocate memory", "Cannot allocate memory")
_THREAD_START_FAILURE = "Resource temporarily unavailable"


def optimizer_for(name: str, params: Sequence[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """SGD with momentum (one state buffer per parameter) or Adam (two), as the planner counts
    (``name``: an ``Optimizer`` or its value)."""
    if name == Optimizer.ADAM:
        return torch.optim.Adam(params, lr=lr)
    if name != Optimizer.SGD:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM)


def distillation_loss(teacher: nn.Module, inputs: torch.Tensor, temperature: float) -> LossFn:
    """KL divergence from the teacher's softened predictions on ``inputs``, scaled by T².

    The T² keeps the gradients' size independent of the temperature (Hinton et al.).
    """
    with torch.no_grad():
        soft_targets = functional.softmax(teacher(inputs) / temperature, dim=1)

    def loss(logits: torch.Tensor) -> torch.Tensor:
        log_probs = functional.log_softmax(logits / temperature, dim=1)
        kl = functional.kl_div(log_probs, soft_targets, reduction="batchmean")
        return kl * temperature**2

    return loss


def forward_backward(
    student: nn.Module,
    stages: Sequence[nn.Module],
    schedule: Schedule | None,
    inputs: torch.Tensor,
    loss_fn: LossFn,
) -> float:
    """Forward, loss and backward (the span the activation peak covers); the loss's value."""
    if schedule is None:
        loss = loss_fn(student(inputs))
        loss.backward()
        return float(loss.detach())
    return float(run_schedule(stages, schedule, inputs, loss_fn))


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError | torch.OutOfMemoryError):
        return True
    if not isinstance(error, RuntimeError):
        return False
    message = str(error)
    if any(text in message for text in _CPU_ALLOCATOR_FAILURES):
        return True
    # A thread (autograd's, OpenMP's) whose stack cannot be mapped fails with EAGAIN; under an
    # address-space limit that is the limit's doing, elsewhere it may be a process-count limit.
    return _THREAD_START_FAILURE in message and _address_space_limited()


def _address_space_limited() -> bool:
    soft_limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    return soft_limit != resource.RLIM_INFINITY
