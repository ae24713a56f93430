"""Measure every stage of a chain on the current device and build its ``Chain`` (bytes, seconds).

Each quantity is measured exactly as ``docs/checkpointing.md`` defines it, with the same meter the
executor's peaks are measured with, so a simulated peak and a measured one mean the same thing:

- ``cw[j]``: storage bytes of the stage's real input ``a_j`` (``cw[L]``: the last output);
- ``cbw[j+1]``: live bytes a forward with grad leaves behind, the output held and the input not
  counted (it is there before);
- ``ftmp[j]``, ``ftmp_nograd[j]``: peak above what a forward with grad (without grad) leaves;
- ``saves_output[j]``: whether the tape keeps the output alive by itself: the output's last
  reference is dropped while the graph is held (by the executor's ``GradientAnchor``), and the
  output is saved unless live bytes fall by its storage (an output that is a view of the input
  falls by nothing, and is rightly "saved": dropping it frees nothing);
- ``btmp[j]``: peak of the backward above its start, in the state the executor starts ``Bwd_j``
  in: the input, the tape and the output gradient live, the output itself only where the tape
  saved it (so it holds the input gradient and the parameter-gradient temporaries, as gradient
  buffers are preallocated);
- ``btmp[L]``: peak of the loss's forward and backward above its input;
- ``fw``, ``bw``: medians of timed runs made without the meter, which slows operators; ``fw`` is
  a forward without grad and ``bw`` includes the extra time of recording the tape (see
  ``_measure_times``).

Profiling leaves no trace: buffers (batch-norm statistics), the RNG and parameter gradients are
restored to what they were.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeGuard

import torch

from checkpointing.execution.execute import GradientAnchor
from checkpointing.execution.meter import memory_meter
from checkpointing.execution.steps import storage_bytes
from checkpointing.planning.chain import Chain


class ProfileError(ValueError):
    """Stages, inputs, settings or a stored profile that cannot be profiled or read."""


@dataclass(frozen=True)
class ProfileConfig:
    repeats: int = 5
    """Timed runs per stage; medians are reported."""
    warmup: int = 1
    """Untimed runs per stage before the timed ones."""

    def __post_init__(self) -> None:
        for name, least in (("repeats", 1), ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ProfileError(f"'{name}' must be an integer, got {value!r}")
            if value < least:
                raise ProfileError(f"'{name}' must be at least {least}, got {value}")


@dataclass(frozen=True)
class ChainProfile:
    chain: Chain
    """Sizes in bytes, times in seconds."""
    stage_names: tuple[str, ...]
    batch_size: int
    input_shape: tuple[int, ...]
    """Shape of the example input, batch dimension included."""
    device: str

    def __post_init__(self) -> None:
        if len(self.stage_names) != self.chain.length:
            raise ProfileError(
                f"{len(self.stage_names)} stage names for a chain of {self.chain.length} stages"
            )
        if not self.input_shape or self.input_shape[0] != self.batch_size:
            raise ProfileError(
                f"input shape {self.input_shape} does not start with the batch size "
                f"{self.batch_size}"
            )

    def to_dict(self) -> dict[str, object]:
        return {
            "chain": self.chain.to_dict(),
            "stage_names": list(self.stage_names),
            "batch_size": self.batch_size,
            "input_shape": list(self.input_shape),
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ChainProfile:
        if not isinstance(data, Mapping):
            raise ProfileError(f"a profile must be a JSON object, got {type(data).__name__}")
        keys = ("chain", "stage_names", "batch_size", "input_shape", "device")
        missing = [key for key in keys if key not in data]
        if missing:
            raise ProfileError(f"missing key(s): {', '.join(missing)}")
        unknown = sorted(set(data) - set(keys))
        if unknown:
            raise ProfileError(f"unknown key(s): {', '.join(unknown)}")
        chain = data["chain"]
        if not isinstance(chain, Mapping):
            raise ProfileError(f"'chain' must be an object, got {type(chain).__name__}")
        names = data["stage_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ProfileError(f"'stage_names' must be a list of strings, got {names!r}")
        shape = data["input_shape"]
        if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
            raise ProfileError(f"'input_shape' must be a list of sizes, got {shape!r}")
        batch_size = data["batch_size"]
        if not _is_int(batch_size):
            raise ProfileError(f"'batch_size' must be an integer, got {batch_size!r}")
        device = data["device"]
        if not isinstance(device, str):
            raise ProfileError(f"'device' must be a string, got {device!r}")
        return cls(
            chain=Chain.from_dict(chain),
            stage_names=tuple(names),
            batch_size=batch_size,
            input_shape=tuple(shape),
            device=device,
        )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class _Memory:
    """Byte counts of one stage, filled in by the memory pass."""

    cbw: int = 0
    ftmp: int = 0
    ftmp_nograd: int = 0
    btmp: int = 0
    saves_output: bool = True


def profile_stages(
    stages: Sequence[torch.nn.Module],
    example_input: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    config: ProfileConfig = ProfileConfig(),
    stage_names: Sequence[str] | None = None,
) -> ChainProfile:
    """Profile ``stages`` (one tensor in, one out) on ``example_input``'s device.

    ``loss_fn`` maps the last stage's output to a scalar (it closes over the targets).
    """
    if not stages:
        raise ProfileError("there are no stages to profile")
    if stage_names is None:
        stage_names = [f"stage_{j}" for j in range(len(stages))]
    if len(stage_names) != len(stages):
        raise ProfileError(f"{len(stage_names)} stage names for {len(stages)} stages")
    if example_input.dim() == 0:
        raise ProfileError("the example input needs a batch dimension")
    device = example_input.device
    _check_devices(stages, device)

    with _leaving_no_trace(stages, device):
        activations = _stage_inputs(stages, example_input)
        # Timing first also warms up: one-time allocations made on first use (workspaces,
        # caches) then happen before the memory pass and cannot pass for a stage's tape.
        fw_s, bw_s = _measure_times(stages, activations, loss_fn, config, device)
        memory = _measure_memory(stages, activations, loss_fn, device)

    chain = Chain(
        fw=fw_s,
        bw=bw_s,
        cw=tuple(float(storage_bytes(a)) for a in activations),
        cbw=(0.0, *(float(m.cbw) for m in memory[:-1])),
        ftmp=tuple(float(m.ftmp) for m in memory[:-1]),
        ftmp_nograd=tuple(float(m.ftmp_nograd) for m in memory[:-1]),
        btmp=tuple(float(m.btmp) for m in memory),
        saves_output=tuple(m.saves_output for m in memory[:-1]),
    )
    return ChainProfile(
        chain=chain,
        stage_names=tuple(stage_names),
        batch_size=example_input.shape[0],
        input_shape=tuple(example_input.shape),
        device=str(device),
    )


def _check_devices(stages: Sequence[torch.nn.Module], device: torch.device) -> None:
    for j, stage in enumerate(stages):
        for tensor in (*stage.parameters(), *stage.buffers()):
            if tensor.device != device:
                raise ProfileError(
                    f"stage {j} holds a tensor on {tensor.device}, the input is on {device}"
                )


@contextmanager
def _leaving_no_trace(stages: Sequence[torch.nn.Module], device: torch.device) -> Iterator[None]:
    """Preallocate parameter gradients as the executor does; restore all state afterwards."""
    params = list(dict.fromkeys(p for s in stages for p in s.parameters() if p.requires_grad))
    buffers = [
        (module, name, buffer, buffer.detach().clone())
        for stage in stages
        for module in stage.modules()
        for name, buffer in module.named_buffers(recurse=False)
    ]
    old_grads = [p.grad for p in params]
    old_grad_values = [None if g is None else g.detach().clone() for g in old_grads]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, grad, values in zip(params, old_grads, old_grad_values, strict=True):
                if grad is not None and values is not None:
                    grad.copy_(values)
                p.grad = grad
            for module, name, buffer, values in buffers:
                buffer.copy_(values)
                # A module that replaced the buffer object gets the original back.
                setattr(module, name, buffer)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)


def _stage_inputs(
    stages: Sequence[torch.nn.Module], example_input: torch.Tensor
) -> list[torch.Tensor]:
    """``a_0 .. a_L``: the input and every stage's real output."""
    activations = [example_input.detach()]
    with torch.no_grad():
        for j, stage in enumerate(stages):
            output = stage(activations[-1])
            if not isinstance(output, torch.Tensor):
                raise ProfileError(
                    f"stage {j} returned {type(output).__name__}, a stage returns one tensor"
                )
            activations.append(output)
    return activations


def _stage_input(activations: Sequence[torch.Tensor], j: int) -> torch.Tensor:
    """A fresh leaf for stage ``j``; only the model input itself does not need a gradient."""
    x = activations[j].detach()
    return x.requires_grad_(True) if j > 0 else x


def _measure_memory(
    stages: Sequence[torch.nn.Module],
    activations: Sequence[torch.Tensor],
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
) -> list[_Memory]:
    """Byte counts of every stage and, last, of the loss."""
    params = [p for s in stages for p in s.parameters()]
    grads = [p.grad for p in params if p.grad is not None]
    buffers = [b for s in stages for b in s.buffers()]
    results: list[_Memory] = []
    with memory_meter(device) as meter:
        meter.track(*activations, *params, *grads, *buffers)
        for j, stage in enumerate(stages):
            measured = _Memory()
            x = _stage_input(activations, j)

            before_bytes = meter.live_bytes
            meter.reset_peak()
            y = stage(x)
            after_bytes = meter.live_bytes
            # A stage that drops memory it held before would read negative: it adds nothing.
            measured.cbw = max(after_bytes - before_bytes, 0)
            ftmp_grad = meter.peak_bytes - after_bytes

            with torch.no_grad():
                meter.reset_peak()
                y_nograd = stage(x)
                ftmp_nograd = meter.peak_bytes - meter.live_bytes
                del y_nograd
            measured.ftmp = max(ftmp_grad, 0)
            measured.ftmp_nograd = max(ftmp_nograd, 0)

            # In a list, so that the backward can be handed the only reference, as the executor
            # hands it over: the gradient is then freed during the backward, not after it.
            output_grads = [torch.randn_like(y)]
            anchor = GradientAnchor(y)
            output_bytes = storage_bytes(y)
            held_bytes = meter.live_bytes
            del y
            released_bytes = held_bytes - meter.live_bytes
            measured.saves_output = not (output_bytes > 0 and released_bytes >= output_bytes)
            if not measured.saves_output:
                # The chain's invariant (a tape holds its output, saved or not), which a stage
                # that also frees memory it held before would break.
                measured.cbw = max(measured.cbw, output_bytes)

            if anchor.requires_grad:
                start_bytes = meter.live_bytes
                meter.reset_peak()
                anchor.backward(output_grads.pop())
                measured.btmp = max(meter.peak_bytes - start_bytes, 0)
            del x, anchor, output_grads
            results.append(measured)

        x = activations[-1].detach().requires_grad_(True)
        start_bytes = meter.live_bytes
        meter.reset_peak()
        _loss(loss_fn, x).backward()
        results.append(_Memory(btmp=max(meter.peak_bytes - start_bytes, 0)))
        del x
    return results


def _loss(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    loss = loss_fn(x)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ProfileError("the loss function must return a scalar tensor")
    return loss


def _measure_times(
    stages: Sequence[torch.nn.Module],
    activations: Sequence[torch.Tensor],
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    config: ProfileConfig,
    device: torch.device,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Median times of every stage (``fw``: without grad; ``bw``: see below), then the loss's.

    Every stage's tape is recorded exactly once per step whatever the schedule, so only the
    forwards without grad differ between schedules: ``fw`` is the time of one of those, and the
    extra cost of recording the tape is added to the stage's backward, which also runs once.
    The makespan the simulator sums is then the step's time, and the DP weighs recomputations
    at what they really cost.
    """
    fw_s: list[float] = []
    bw_s: list[float] = []
    for j, stage in enumerate(stages):
        forwards: list[float] = []
        recording: list[float] = []
        backwards: list[float] = []
        for run in range(config.warmup + config.repeats):
            x = _stage_input(activations, j)
            with torch.no_grad():
                start = _now(device)
                stage(x)
                no_grad_s = _now(device) - start
            start = _now(device)
            y = stage(x)
            forward_s = _now(device) - start
            backward_s = 0.0
            if y.requires_grad:
                output_grad = torch.randn_like(y)
                start = _now(device)
                torch.autograd.backward(y, output_grad)
                backward_s = _now(device) - start
            if run >= config.warmup:
                forwards.append(no_grad_s)
                recording.append(forward_s)
                backwards.append(backward_s)
        fw_s.append(statistics.median(forwards))
        backward_s = statistics.median(backwards)
        if backward_s > 0:  # a stage with no backward records no tape either
            backward_s += max(0.0, statistics.median(recording) - fw_s[-1])
        bw_s.append(backward_s)

    losses: list[float] = []
    for run in range(config.warmup + config.repeats):
        x = activations[-1].detach().requires_grad_(True)
        start = _now(device)
        _loss(loss_fn, x).backward()
        loss_s = _now(device) - start
        if run >= config.warmup:
            losses.append(loss_s)
    bw_s.append(statistics.median(losses))
    return tuple(fw_s), tuple(bw_s)


def _now(device: torch.device) -> float:
    """Wall-clock seconds once the device has finished the work queued so far."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
