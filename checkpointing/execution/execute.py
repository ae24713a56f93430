"""Run a schedule of a chain of stages as one training step: forward, loss and backward.

The executor follows the memory model of ``docs/checkpointing.md`` operation by operation, so
that the peak the simulator predicts for a schedule is the peak a step really reaches:

- plain activations ``a_j`` are stored without a graph; ``a_0`` is the input batch;
- the tape of stage ``j`` is its input leaf ``x`` (an alias of ``a_j``, no new storage) and a
  zero-element ``GradientAnchor`` on its output that keeps the graph ``Bwd_j`` consumes, and not
  the output itself: whatever the graph saved stays, the rest is up to the output ``Y_j``;
- the output ``Y_j`` (``a_{j+1}`` without its graph) is held for later forwards until ``d_{j+1}``
  exists, then dropped: from there on its storage lives only where a graph saved it, as in
  plain autograd;
- gradients ``d_j`` are the ``.grad`` of those input leaves.

Parameter gradients accumulate into ``.grad`` as ``loss.backward()`` would. A stage run more
than once in a step behaves as if it ran once: its buffers (BatchNorm running statistics) are
updated by its first forward only, and later forwards replay the random numbers of the first
(dropout masks), so the global RNG ends the step where plain training leaves it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from checkpointing.planning.chain import Chain
from checkpointing.planning.schedule import Op, OpKind, Schedule
from checkpointing.planning.simulate import ScheduleError, simulate

LossFn = Callable[[torch.Tensor], torch.Tensor]
OpObserver = Callable[[int, Op], None]


class StageOutputError(ValueError):
    """A stage returned something other than one tensor."""


def run_schedule(
    stages: Sequence[torch.nn.Module],
    schedule: Schedule,
    inputs: torch.Tensor,
    loss_fn: LossFn,
    after_op: OpObserver | None = None,
) -> torch.Tensor:
    """Run ``schedule`` on ``stages`` for the batch ``inputs``; return the loss, detached.

    ``loss_fn`` maps the last activation to a scalar. ``after_op(position, op)`` is called once
    each operation has finished and released what it frees (to read a memory meter, say).
    ``ScheduleError`` (naming the operation) if the schedule is not valid for ``len(stages)``
    stages; nothing runs in that case.
    """
    if schedule.length != len(stages):
        raise ScheduleError(
            f"schedule is for {schedule.length} stages, {len(stages)} stages were given"
        )
    # Validity does not depend on sizes or times, so any chain of the right length will do.
    simulate(Chain.homogeneous(schedule.length), schedule)
    step = _Step(stages, schedule, inputs, loss_fn)
    for position, op in enumerate(schedule):
        step.apply(position, op)
        if after_op is not None:
            after_op(position, op)
    return step.result()


class _GradientSlot:
    """Where the output gradient waits for the backward: held by the anchor's node, not its tensor.

    The node holding the anchor itself would be a reference cycle (tensor, node, anchor, tensor)
    that only the garbage collector frees.
    """

    def __init__(self) -> None:
        self.grad: torch.Tensor | None = None

    def take(self) -> torch.Tensor | None:
        grad, self.grad = self.grad, None
        return grad


class _AnchorFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, output: torch.Tensor, slot: _GradientSlot) -> torch.Tensor:
        # Nothing is saved: the output's own graph decides what of it stays alive.
        ctx.slot = slot
        return output.new_empty(0)

    @staticmethod
    def backward(ctx: Any, _: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        # Taken, not read: the engine then holds the only reference and frees the gradient once
        # the output's node has used it, as it frees the gradient of any intermediate tensor.
        return ctx.slot.take(), None


class GradientAnchor:
    """A stage's backward, startable without its output.

    ``torch.autograd.backward(y, grad)`` needs ``y``, which keeps ``y``'s storage alive although
    the graph may not have saved it. The anchor is a zero-element tensor computed from ``y``
    (saving nothing), so holding it holds ``y``'s graph and only what that graph saved.
    """

    def __init__(self, output: torch.Tensor) -> None:
        self._slot = _GradientSlot()
        with torch.enable_grad():
            self._tensor: torch.Tensor = _AnchorFunction.apply(output, self._slot)

    @property
    def requires_grad(self) -> bool:
        """False when the output has no graph (nothing upstream needs a gradient)."""
        return self._tensor.requires_grad

    def backward(self, output_grad: torch.Tensor) -> None:
        """Run the backward from the output with ``output_grad``, consuming the graph.

        Pass the gradient without keeping a reference, so that it is freed as the backward
        goes on, once the output's node has used it.
        """
        assert self.requires_grad, "an output without a graph has no backward"
        self._slot.grad = output_grad
        del output_grad
        torch.autograd.backward(self._tensor, torch.empty_like(self._tensor))


@dataclass
class _Tape:
    x: torch.Tensor
    """The stage's input leaf, a detached alias of ``a_j``."""
    anchor: GradientAnchor
    """Holds the graph of the stage's backward, and not its output."""


@dataclass(frozen=True)
class _RngState:
    cpu: torch.Tensor
    cuda: tuple[int, torch.Tensor] | None
    """The CUDA device index and its state, for a step on a CUDA device."""

    @classmethod
    def capture(cls, device: torch.device) -> _RngState:
        if device.type != "cuda":
            return cls(torch.get_rng_state(), None)
        index = device.index if device.index is not None else torch.cuda.current_device()
        return cls(torch.get_rng_state(), (index, torch.cuda.get_rng_state(index)))

    @contextmanager
    def replayed(self) -> Iterator[None]:
        """Run with this state, then put the global RNG back where it was."""
        devices = [] if self.cuda is None else [self.cuda[0]]
        with torch.random.fork_rng(devices=devices, device_type="cuda"):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                index, state = self.cuda
                torch.cuda.set_rng_state(state, index)
            yield


def _is_training_with_buffers(stage: torch.nn.Module) -> bool:
    has_buffers = next(stage.buffers(), None) is not None
    return has_buffers and any(module.training for module in stage.modules())


@contextmanager
def _buffers_swapped_for_copies(stage: torch.nn.Module) -> Iterator[None]:
    """Run on copies of the buffers, leaving the originals untouched.

    A forward without grad may run while a tape of the same stage is alive, and that tape saved
    the buffers (BatchNorm saves its running statistics). Whether the stage's own in-place update
    bumps their version depends on the kernel (BatchNorm's CPU kernel does with grad enabled, not
    without); a bumped version would make that tape's backward fail, so the originals are left
    alone entirely.
    """
    originals = [
        (module, name, buffer)
        for module in stage.modules()
        for name, buffer in module.named_buffers(recurse=False)
    ]
    for module, name, buffer in originals:
        setattr(module, name, buffer.clone())
    try:
        yield
    finally:
        for module, name, buffer in originals:
            setattr(module, name, buffer)


@contextmanager
def _buffers_restored(stage: torch.nn.Module) -> Iterator[None]:
    """Run on the buffers themselves, then write their old values back.

    The forward records a tape that saves the buffers themselves, not copies, so the tape holds
    what the profiler measured. The values go back through ``.data`` so that their version is not
    bumped, which would make that tape's backward fail; no live graph needs the updated values.
    """
    buffers = list(stage.buffers())
    snapshots = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        for buffer, snapshot in zip(buffers, snapshots, strict=True):
            buffer.data.copy_(snapshot)


class _Step:
    """The state of one training step: what the memory model says is in memory, and no more."""

    def __init__(
        self,
        stages: Sequence[torch.nn.Module],
        schedule: Schedule,
        inputs: torch.Tensor,
        loss_fn: LossFn,
    ) -> None:
        self._stages = stages
        self._loss_fn = loss_fn
        self._device = inputs.device
        self._plain: dict[int, torch.Tensor] = {0: inputs}
        self._tapes: dict[int, _Tape] = {}
        # Y_j: the outputs of taped stages, held until their gradient exists.
        self._outputs: dict[int, torch.Tensor] = {}
        self._grads: dict[int, torch.Tensor] = {}
        self._loss: torch.Tensor | None = None
        self._forwards_left = Counter(op.stage for op in schedule if op.kind.is_forward)
        self._forwarded: set[int] = set()
        # Only stages that run again need their RNG state, and only until their last forward.
        self._rng_states: dict[int, _RngState] = {}
        self._current = "no operation yet"

    def apply(self, position: int, op: Op) -> None:
        # One method per operation, so that every tensor a local holds dies when the op ends.
        kind, j = op.kind, op.stage
        self._current = f"operation {position} ({op})"
        if kind is OpKind.FORWARD_CHECK:
            self._forward_no_grad(j, drop_input=False)
        elif kind is OpKind.FORWARD_NOGRAD:
            self._forward_no_grad(j, drop_input=True)
        elif kind is OpKind.FORWARD_ENABLE:
            self._forward_with_grad(j)
        elif kind is OpKind.LOSS:
            self._loss_forward_backward()
        else:
            assert kind is OpKind.BACKWARD
            self._backward(j)

    def result(self) -> torch.Tensor:
        assert self._loss is not None, "a valid schedule computes the loss"
        assert not self._plain and not self._tapes, "a valid schedule leaves nothing behind"
        assert not self._outputs, "every output is dropped once its gradient exists"
        return self._loss

    def _activation(self, j: int) -> torch.Tensor:
        stored = self._plain.get(j)
        if stored is None:
            stored = self._outputs.get(j - 1)
        if stored is None:
            # The tape of stage j-1 may still hold a_j inside its graph, but not as a tensor that
            # can be handed to a forward. No schedule simulate() accepts gets here (what such a
            # forward stores could never be consumed), but the validation ran on a chain whose
            # tapes all save their outputs, so the executor checks for itself.
            raise ScheduleError(
                f"{self._current}: a_{j} is not in memory (its gradient d_{j} was computed, "
                "so it was dropped)"
            )
        return stored.detach()

    def _drop_activation_for_gradient(self, j: int) -> None:
        """``d_j`` exists: a stored ``a_j`` and the output ``Y_{j-1}`` are not needed any more."""
        self._plain.pop(j, None)
        self._outputs.pop(j - 1, None)

    def _forward_no_grad(self, j: int, *, drop_input: bool) -> None:
        x = self._activation(j)
        self._plain[j + 1] = self._run_stage(j, x, record=False)
        if drop_input:
            del self._plain[j]

    def _forward_with_grad(self, j: int) -> None:
        x = self._activation(j)
        if j > 0:
            # The input a_0 is data: nothing upstream of stage 0 needs its gradient.
            x.requires_grad_(True)
        y = self._run_stage(j, x, record=True)
        self._tapes[j] = _Tape(x, GradientAnchor(y))
        if (j + 1) not in self._grads:
            self._outputs[j] = y.detach()

    def _loss_forward_backward(self) -> None:
        last = len(self._stages)
        x = self._activation(last).requires_grad_(True)
        with torch.enable_grad():
            loss = self._loss_fn(x)
            loss.backward()
        self._grads[last] = x.grad if x.grad is not None else torch.zeros_like(x)
        self._drop_activation_for_gradient(last)
        self._loss = loss.detach()

    def _backward(self, j: int) -> None:
        tape = self._tapes.pop(j)
        # A stage whose output needs no grad (parameter-free stage 0) has nothing to propagate.
        if tape.anchor.requires_grad:
            tape.anchor.backward(self._grads.pop(j + 1))
        else:
            del self._grads[j + 1]
        if j > 0:
            x = tape.x
            del tape
            self._grads[j] = x.grad if x.grad is not None else torch.zeros_like(x)
        self._drop_activation_for_gradient(j)

    def _run_stage(self, j: int, x: torch.Tensor, *, record: bool) -> torch.Tensor:
        stage = self._stages[j]
        self._forwards_left[j] -= 1
        if j not in self._forwarded:
            self._forwarded.add(j)
            if self._forwards_left[j] > 0:
                self._rng_states[j] = _RngState.capture(self._device)
            with torch.set_grad_enabled(record):
                return _checked_output(j, stage(x))
        rng_state = self._rng_states[j]
        if self._forwards_left[j] == 0:
            del self._rng_states[j]
        with rng_state.replayed(), torch.set_grad_enabled(record):
            if not _is_training_with_buffers(stage):
                return _checked_output(j, stage(x))
            keep_buffers = _buffers_restored if record else _buffers_swapped_for_copies
            with keep_buffers(stage):
                return _checked_output(j, stage(x))


def _checked_output(j: int, output: object) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise StageOutputError(f"stage {j} returned {type(output).__name__}, not one tensor")
    return output
