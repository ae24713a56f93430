"""A board's training process, measured from inside: ``python -m edgefleet.harness.train_child``.

Arguments: ``JOB RESULT``. ``JOB`` is a JSON file describing an
``edgefleet.harness.hardcap.TrainJob``; the child trains for ``steps`` optimizer steps on synthetic
data and writes a JSON result to ``RESULT``. ``edgefleet.harness.hardcap`` runs it under a real
memory cap, so it holds everything a board's training process holds, and nothing else:

- the student, split into the chain a schedule indexes
  (``checkpointing.execution.split.split_model``), its parameter gradients allocated up front
  (zeros) and its optimizer's state;
- an optional teacher, in eval mode without grad, run on every batch for soft targets; the loss
  is then the usual distillation loss, the KL divergence between the teacher's softmax and the
  student's;
- every step, a batch of random ``uint8`` images (what a decoder hands over) and its ``float``
  copy, both alive during the step as a data loader holds them;
- the step: plain autograd when the job's schedule is null, else ``run_schedule``.

The result (exit 0) reports the resident memory of each phase (imports, model, training) from
the kernel's high-water mark, reset between phases, and what live tensors account for, counted
by ``LiveTensorAccountant`` over all steps:

- ``live_peak_bytes``: the first step's activation peak as ``docs/checkpointing.md`` defines it;
- ``live_tensor_peak_bytes``: the largest total of live tensor bytes (parameters, gradients,
  buffers, optimizer state, teacher, batches and activations); it comes after the first step,
  once the optimizer's state exists;
- ``allocator_overhead_bytes``: peak RSS minus (RSS after imports + ``live_tensor_peak_bytes``):
  what the process holds beyond live tensors (freed memory the allocator keeps, Python objects
  such as the model's modules and traced graphs, thread stacks). Negative where tensor pages
  were never touched.

Run as an emulated board's program (qemu-user; ``EDGEFLEET_GUEST_SAMPLE_S`` set), the status
figures above include qemu's own memory; the result then also has ``guest``: the guest's own
baseline and sampled peak and qemu's share (``edgefleet.board.guest_sampler``).

Running out of memory (``MemoryError``, torch's CPU allocator failing, or a thread failing to
start under an address-space limit) writes ``{"survived": false, "error": "MemoryError", ...}``
and exits 3; a job that cannot run (a bad field, an unknown model, an invalid schedule) exits 2
with ``"error": "JobError"``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torchvision  # noqa: F401 - part of the runtime a board's training process loads
from torch import nn
from torch.nn import functional

from checkpointing.execution.meter import memory_meter
from checkpointing.execution.models import build_model
from checkpointing.execution.process_memory import (
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    status_bytes,
)
from checkpointing.execution.split import split_model
from checkpointing.execution.steps import storage_bytes
from checkpointing.execution.training import (
    LossFn,
    distillation_loss,
    forward_backward,
    is_out_of_memory,
    optimizer_for,
)
from checkpointing.planning.budget import Optimizer
from checkpointing.planning.chain import Chain
from checkpointing.planning.schedule import Schedule
from checkpointing.planning.simulate import simulate
from edgefleet.harness.hardcap import JobError, TrainJob

if TYPE_CHECKING:
    from edgefleet.board.guest_sampler import GuestSampler

StepScope = Callable[[], AbstractContextManager[object]]
"""What surrounds each training step: nothing, or an allocator's per-step bracket."""

EXIT_OK = 0
EXIT_JOB_ERROR = 2
EXIT_MEMORY_ERROR = 3

_SGD_LR = 0.01
GUEST_SAMPLE_ENV = "EDGEFLEET_GUEST_SAMPLE_S"
"""Set by the emulated board's wrapper (``edgefleet.board.guest_sampler.SAMPLE_ENV``)."""
_ADAM_LR = 1e-3


def main(argv: Sequence[str] | None = None, step_scope: StepScope | None = None) -> int:
    """``step_scope``: entered around each training step (an allocator that plans per step)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(
            "usage: python -m edgefleet.harness.train_child JOB.json RESULT.json", file=sys.stderr
        )
        return EXIT_JOB_ERROR
    job_path, result_path = Path(args[0]), Path(args[1])
    sampler = _guest_sampler()
    try:
        job = TrainJob.from_dict(json.loads(job_path.read_text()))
        result = train(job, step_scope or nullcontext)
    except (JobError, OSError, json.JSONDecodeError) as error:
        _write(result_path, _failure("JobError", error))
        return EXIT_JOB_ERROR
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        failure = _failure("MemoryError", error)
        # The traceback's frames hold the failed step's tensors; free them before writing.
        del error
        _write(result_path, _with_guest(failure, sampler))
        return EXIT_MEMORY_ERROR
    _write(result_path, _with_guest(result, sampler))
    return EXIT_OK


def _guest_sampler() -> GuestSampler | None:
    """Under qemu-user (an emulated board), a sampler of the guest's own memory; natively None.

    The status figures this module reports include qemu's own memory there (edgefleet.board.
    guest_sampler); the scenario's wrapper asks for the guest's through the environment.
    """
    if not os.environ.get(GUEST_SAMPLE_ENV):
        return None
    from edgefleet.board.guest_sampler import sampler_from_environment

    return sampler_from_environment()


def _with_guest(result: dict[str, Any], sampler: GuestSampler | None) -> dict[str, Any]:
    if sampler is None:
        return result
    return {**result, "guest": sampler.stop().to_dict()}


def _failure(kind: str, error: BaseException) -> dict[str, Any]:
    return {
        "survived": False,
        "error": kind,
        "exception": type(error).__name__,
        "message": str(error)[:2000],
    }


def _write(path: Path, result: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n")


@dataclass
class _Models:
    student: nn.Module
    teacher: nn.Module | None
    stages: list[nn.Module]
    schedule: Schedule | None


@dataclass
class _Training:
    """What the training phase measured."""

    live_peak_bytes: int = 0
    live_tensor_peak_bytes: int = 0
    terms: dict[str, int] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    step_times_s: list[float] = field(default_factory=list)


class _Phases:
    """The peak RSS of each phase, the high-water mark being reset between them."""

    def __init__(self) -> None:
        self.peak_rss_bytes: dict[str, int] = {}
        self.resettable = True

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield
        self.peak_rss_bytes[name] = peak_rss_bytes()
        self.resettable = reset_peak_rss() and self.resettable


def train(job: TrainJob, step_scope: StepScope = nullcontext) -> dict[str, Any]:
    """Run ``job`` in this process; the result the child writes (``survived`` true)."""
    phases = _Phases()
    # The imports happened before this call; their peak is the high-water mark so far.
    with phases.phase("imports"):
        baseline_rss = rss_bytes()
    with phases.phase("model"):
        models = _build(job)
        after_model_rss = rss_bytes()
        after_model_vm_size = status_bytes("VmSize")
    with phases.phase("training"):
        training = _train(job, models, step_scope)
    peak_rss = max(phases.peak_rss_bytes.values())
    return {
        "survived": True,
        "job": job.to_dict(),
        "stages": len(models.stages),
        "peak_rss_bytes": peak_rss,
        "baseline_rss_bytes": baseline_rss,
        "after_model_rss_bytes": after_model_rss,
        "phase_peak_rss_bytes": phases.peak_rss_bytes,
        "phase_peaks_separate": phases.resettable,
        "live_peak_bytes": training.live_peak_bytes,
        "live_tensor_peak_bytes": training.live_tensor_peak_bytes,
        "allocator_overhead_bytes": peak_rss - (baseline_rss + training.live_tensor_peak_bytes),
        "terms": training.terms,
        # Address space, which is what an RLIMIT_AS cap limits.
        "after_model_vm_size_bytes": after_model_vm_size,
        "peak_vm_size_bytes": status_bytes("VmPeak"),
        "final_rss_anon_bytes": status_bytes("RssAnon"),
        "final_rss_file_bytes": status_bytes("RssFile"),
        "losses": training.losses,
        "step_times_s": training.step_times_s,
    }


def _build(job: TrainJob) -> _Models:
    torch.manual_seed(job.seed)
    try:
        student = build_model(job.model, job.num_classes).train()
        teacher = None
        if job.teacher is not None:
            teacher = build_model(job.teacher, job.num_classes).eval().requires_grad_(False)
        example = torch.zeros(job.batch_size, 3, job.image_size, job.image_size)
        stages = [stage.module for stage in split_model(student, example)]
        schedule = None
        if job.schedule is not None:
            schedule = Schedule.from_strings(len(stages), job.schedule)
            # Validity does not depend on sizes: any chain of the right length checks it now,
            # before training starts, as run_schedule would at the first step.
            simulate(Chain.homogeneous(len(stages)), schedule)
    except ValueError as error:
        # Unknown model, a model that cannot be split, an invalid schedule.
        raise JobError(f"{type(error).__name__}: {error}") from error
    return _Models(student, teacher, stages, schedule)


def _train(job: TrainJob, models: _Models, step_scope: StepScope) -> _Training:
    student, teacher = models.student, models.teacher
    params = list(student.parameters())
    for parameter in params:
        parameter.grad = torch.zeros_like(parameter)
    grads = [p.grad for p in params if p.grad is not None]
    optimizer = optimizer_for(
        job.optimizer, params, _ADAM_LR if job.optimizer == Optimizer.ADAM else _SGD_LR
    )
    teacher_tensors = [] if teacher is None else [*teacher.parameters(), *teacher.buffers()]
    training = _Training()
    with memory_meter(torch.device("cpu")) as meter:
        meter.track(*params, *grads, *student.buffers(), *teacher_tensors)
        for step in range(job.steps):
            started = time.perf_counter()
            with step_scope():
                shape = (job.batch_size, 3, job.image_size, job.image_size)
                raw = torch.randint(0, 256, shape, dtype=torch.uint8)
                inputs = raw.float().div_(255.0)
                loss_fn = _loss_fn(teacher, inputs, job.num_classes)
                if step == 0:
                    training.terms = {
                        "raw_batch_bytes": storage_bytes(raw),
                        "input_batch_bytes": storage_bytes(inputs),
                    }
                    training.live_tensor_peak_bytes = meter.peak_bytes
                    start_bytes = meter.live_bytes
                    meter.reset_peak()
                training.losses.append(
                    forward_backward(student, models.stages, models.schedule, inputs, loss_fn)
                )
                if step == 0:
                    # docs/checkpointing.md: the input batch counts, though it predates the step.
                    training.live_peak_bytes = (
                        meter.peak_bytes - start_bytes + storage_bytes(inputs)
                    )
                optimizer.step()
                optimizer.zero_grad(set_to_none=False)
                del raw, inputs, loss_fn
                training.step_times_s.append(time.perf_counter() - started)
        training.live_tensor_peak_bytes = max(training.live_tensor_peak_bytes, meter.peak_bytes)
    training.terms |= {
        "parameters_bytes": sum(storage_bytes(p) for p in params),
        "gradients_bytes": sum(storage_bytes(g) for g in grads),
        "buffers_bytes": sum(storage_bytes(b) for b in student.buffers()),
        "optimizer_state_bytes": sum(
            storage_bytes(value)
            for state in optimizer.state.values()
            for value in state.values()
            if isinstance(value, torch.Tensor)
        ),
        "teacher_bytes": sum(storage_bytes(t) for t in teacher_tensors),
    }
    return training


def _loss_fn(teacher: nn.Module | None, inputs: torch.Tensor, num_classes: int) -> LossFn:
    """Cross-entropy on random labels, or the KL divergence from the teacher's soft targets."""
    if teacher is None:
        targets = torch.randint(0, num_classes, (inputs.shape[0],))

        def cross_entropy(logits: torch.Tensor) -> torch.Tensor:
            return functional.cross_entropy(logits, targets)

        return cross_entropy
    return distillation_loss(teacher, inputs, temperature=1.0)


if __name__ == "__main__":
    sys.exit(main())
