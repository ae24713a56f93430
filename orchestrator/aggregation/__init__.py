"""Aggregate the boards' weight updates into the next fleet model (numpy over safetensors).

An update is a board's weight delta for a round, stored as a safetensors file. Files are read
with positioned reads (``TensorFile``), never memory-mapped: a mapped file's pages stay resident
in the coordinator for as long as the mapping lives, and a round holds a hundred updates.

- ``fedavg``: the mean of the deltas weighted by each board's sample count. It needs no update
  twice, so the coordinator folds each update into a ``RunningSum`` as it accepts it; closing
  the round only divides and writes the model. Memory: O(model), whatever the number of boards.
- ``median``: the coordinate-wise median (robust to a minority of bad boards);
- ``trimmed_mean``: the coordinate-wise mean after dropping the ``trim_fraction`` largest and
  smallest values of each coordinate. Both need every update's value of a coordinate at once,
  so they read the updates block of rows by block of rows: memory O(model) + O(nodes × block).

Updates are validated against the global model (same tensor names, shapes and dtypes, finite
values); a rejected update gets a reason, and aggregation uses the rest.
"""

from orchestrator.aggregation.checks import (
    Problem,
    Rejection,
    Update,
    Verdict,
    check_update,
    validate_update,
)
from orchestrator.aggregation.errors import AggregationError
from orchestrator.aggregation.rules import AggregationRule, aggregate
from orchestrator.aggregation.running_sum import (
    FOLD_LANES,
    AlreadyFolded,
    RoundSums,
    RunningSum,
    SumClosed,
)
from orchestrator.aggregation.tensor_file import Layout, TensorFile, model_layout

__all__ = [
    "FOLD_LANES",
    "AggregationError",
    "AggregationRule",
    "AlreadyFolded",
    "Layout",
    "Problem",
    "Rejection",
    "RoundSums",
    "RunningSum",
    "SumClosed",
    "TensorFile",
    "Update",
    "Verdict",
    "aggregate",
    "check_update",
    "model_layout",
    "validate_update",
]
