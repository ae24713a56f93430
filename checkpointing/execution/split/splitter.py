"""Cut a model into a chain of stages, each mapping exactly one tensor to exactly one tensor.

Running the stages one after the other computes what the model computes, and the stages hold the
model's own submodule, parameter and buffer objects, so gradients land in ``model.parameters()``
and batch-norm statistics in the model's buffers.

- An ``nn.Sequential`` (nested plain Sequentials flattened) is cut between its leaf children; no
  tracing is needed, so any child works.
- Any other model is traced with ``torch.fx`` and cut wherever exactly one tensor value crosses.

A stage never modifies its input in place: the executor keeps stage inputs as checkpoints (leaf
tensors requiring grad) and reuses them for recomputation (pytorch issues #26546, #36383). So an
in-place op on a boundary tensor (``ReLU(inplace=True)`` after a batch norm) is merged into the
stage that produced the tensor, walking further back while that stage's output may share memory
with its own input (a view, an eval-mode dropout). An in-place op on the model's input is made
out of place instead, without touching the user's model.

Alias and mutation facts come from running the example input through fake tensors (no compute, no
side effect on buffers or the RNG) plus static rules that hold in either train or eval mode
(``inplace=True`` modules mutate, dropouts may return their input). fx bakes Python-level reads of
``self.training`` into the graph, so split a model in the mode it will run in, and after moving it
to its device (buffers that the graph fetches itself are held by reference)."""

from __future__ import annotations

import torch
from torch import nn

from checkpointing.execution.split.sequential import is_plain_sequential, split_sequential
from checkpointing.execution.split.stage import SplitError, Stage
from checkpointing.execution.split.traced import split_traced


def split_model(model: nn.Module, example_input: torch.Tensor) -> list[Stage]:
    """Cut ``model`` into stages at every valid point; ``SplitError`` says why it cannot be cut."""
    if not isinstance(example_input, torch.Tensor):
        raise SplitError(
            f"example_input must be a tensor, got {type(example_input).__name__}; "
            "a chain takes exactly one tensor"
        )
    if is_plain_sequential(model):
        return split_sequential(model, example_input)
    return split_traced(model, example_input)
