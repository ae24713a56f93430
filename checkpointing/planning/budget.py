"""A training process's peak resident memory, as a sum of named terms (no torch here).

A board's budget is the RAM its agent may use, so the planner must predict the whole process, not
only the activations. Each term is measured on the board or modelled from measurements:

- ``runtime_baseline``: what the process holds after importing its libraries (measured on the
  board; about 670 MB for torch and torchvision here);
- ``model_libraries``: what importing the library that builds the models adds (torchvision,
  which the agent loads only for its models: 87 MB here), measured by the board that profiled;
- ``parameters``, ``gradients``: the student's parameters and buffers, and one gradient buffer
  per parameter;
- ``optimizer_state``: SGD with momentum keeps one buffer per parameter, Adam two;
- ``teacher``: the teacher's parameters and buffers and its inference peak (no grad: only two
  activations and a transient are alive at a time);
- ``input_batch``: the float batch the step trains on (the activation peak counts it as ``a_0``,
  here it is reported on its own and left out of ``activations``);
- ``loader_buffers``: the decoded uint8 batch the data loader holds beside it;
- ``activations``: the schedule's activation peak, from the simulator;
- ``allocator_overhead``: what the allocator holds beyond live tensors (fragmentation, cached
  blocks), a fraction of the tensor bytes plus a constant, both measured under a hard cap.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from checkpointing.planning.chain import Chain

FLOAT_BYTES = 4
CHANNELS = 3


class Optimizer(enum.StrEnum):
    """The optimizers a job may train with (the protocol's ``Optimizer``, by name)."""

    SGD = "sgd"
    ADAM = "adam"

    @property
    def state_buffers(self) -> int:
        """Buffers of parameter size the optimizer keeps (SGD: momentum; Adam: two moments)."""
        return 1 if self is Optimizer.SGD else 2


OPTIMIZERS: tuple[str, ...] = tuple(optimizer.value for optimizer in Optimizer)
"""Their names, as job files and the protocol spell them."""


@dataclass(frozen=True)
class ProcessFacts:
    """What the board measured about its own process."""

    runtime_baseline_bytes: int
    allocator_overhead_fraction: float = 0.0
    """Allocator bytes beyond live tensors, per live tensor byte, at the peak."""
    allocator_overhead_bytes: int = 0
    """Allocator bytes beyond live tensors that do not grow with the tensors."""
    model_library_bytes: int = 0
    """What importing the library that builds the models (torchvision) adds to the process,
    which the runtime baseline leaves out; 0 for models built without one."""

    def __post_init__(self) -> None:
        if self.runtime_baseline_bytes < 0:
            raise ValueError(
                f"runtime baseline must not be negative, got {self.runtime_baseline_bytes}"
            )
        if not 0 <= self.allocator_overhead_fraction < 1:
            raise ValueError(
                "allocator overhead fraction must be in [0, 1), "
                f"got {self.allocator_overhead_fraction}"
            )
        if self.allocator_overhead_bytes < 0:
            raise ValueError(
                f"allocator overhead must not be negative, got {self.allocator_overhead_bytes}"
            )
        if self.model_library_bytes < 0:
            raise ValueError(
                f"model library bytes must not be negative, got {self.model_library_bytes}"
            )


@dataclass(frozen=True)
class ModelFacts:
    """Sizes of a model that do not depend on the batch."""

    parameter_bytes: int
    buffer_bytes: int


@dataclass(frozen=True)
class ProcessTerms:
    runtime_baseline: int
    model_libraries: int
    parameters: int
    gradients: int
    optimizer_state: int
    teacher: int
    input_batch: int
    loader_buffers: int
    activations: int
    allocator_overhead: int

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        return {
            "runtime_baseline": self.runtime_baseline,
            "model_libraries": self.model_libraries,
            "parameters": self.parameters,
            "gradients": self.gradients,
            "optimizer_state": self.optimizer_state,
            "teacher": self.teacher,
            "input_batch": self.input_batch,
            "loader_buffers": self.loader_buffers,
            "activations": self.activations,
            "allocator_overhead": self.allocator_overhead,
        }


def input_batch_bytes(batch_size: int, image_size: int) -> int:
    return batch_size * CHANNELS * image_size * image_size * FLOAT_BYTES


def inference_peak_bytes(chain: Chain) -> int:
    """Activation peak of a forward without grad: each stage's input, output and transient."""
    peaks = (
        chain.cw[i] + chain.cw[i + 1] + chain.forward_nograd_tmp[i] for i in range(chain.length)
    )
    return int(max(peaks))


def process_terms(
    *,
    student: ModelFacts,
    optimizer: Optimizer,
    batch_size: int,
    image_size: int,
    activation_peak_bytes: float,
    facts: ProcessFacts,
    teacher: ModelFacts | None = None,
    teacher_chain: Chain | None = None,
) -> ProcessTerms:
    """Every term of the process's predicted peak for one training configuration.

    ``activation_peak_bytes`` is the simulator's peak for the schedule (which counts the input
    batch); ``teacher_chain`` is the teacher's predicted chain at this batch and image size.
    """
    assert (teacher is None) == (teacher_chain is None), "a teacher comes with its chain"
    parameters = student.parameter_bytes + student.buffer_bytes
    gradients = student.parameter_bytes
    optimizer_state = optimizer.state_buffers * student.parameter_bytes
    teacher_bytes = 0
    if teacher is not None and teacher_chain is not None:
        teacher_bytes = (
            teacher.parameter_bytes + teacher.buffer_bytes + inference_peak_bytes(teacher_chain)
        )
    batch = input_batch_bytes(batch_size, image_size)
    loader = batch // FLOAT_BYTES
    activations = max(int(activation_peak_bytes) - batch, 0)
    tensor_bytes = (
        parameters + gradients + optimizer_state + teacher_bytes + batch + loader + activations
    )
    overhead = (
        int(facts.allocator_overhead_fraction * tensor_bytes) + facts.allocator_overhead_bytes
    )
    return ProcessTerms(
        runtime_baseline=facts.runtime_baseline_bytes,
        model_libraries=facts.model_library_bytes,
        parameters=parameters,
        gradients=gradients,
        optimizer_state=optimizer_state,
        teacher=teacher_bytes,
        input_batch=batch,
        loader_buffers=loader,
        activations=activations,
        allocator_overhead=overhead,
    )
