"""The aggregation rules, and ``aggregate``, which applies one to a round's updates: FedAvg
through a running sum; the coordinate-wise median and trimmed mean a block of rows at a time
(memory O(model) + O(nodes × block))."""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from orchestrator.aggregation.checks import Rejection, Update, check_update
from orchestrator.aggregation.errors import AggregationError
from orchestrator.aggregation.running_sum import RunningSum
from orchestrator.aggregation.tensor_file import TensorFile, save_tensors


class AggregationRule(enum.StrEnum):
    FEDAVG = "fedavg"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed_mean"


_BLOCK_BYTES = 32 << 20
"""What one block of the coordinate-wise rules may hold: rows of every update, as float64."""


def aggregate(
    global_path: Path,
    updates: Sequence[Update],
    rule: AggregationRule,
    out_path: Path,
    trim_fraction: float = 0.1,
    *,
    checked: bool = False,
) -> tuple[list[Update], list[Rejection]]:
    """Write ``global + aggregate(deltas)`` to ``out_path``; return accepted and rejected.

    ``checked``: every update already passed ``check_update`` (the coordinator checks each one
    as it arrives), so the coordinate-wise rules do not read it a second time to check it.
    """
    if not 0 <= trim_fraction < 0.5:
        raise AggregationError(f"trim fraction must be in [0, 0.5), got {trim_fraction}")
    accepted: list[Update] = []
    rejected: list[Rejection] = []
    if rule is AggregationRule.FEDAVG:
        running = RunningSum(global_path)
        for index, update in enumerate(updates):
            problem = running.add(str(index), update)
            if problem is None:
                accepted.append(update)
            else:
                rejected.append(Rejection(update, problem[1], problem[0]))
        running.write(out_path)
        return accepted, rejected
    for update in updates:
        problem = None if checked else check_update(global_path, update)
        if problem is None:
            accepted.append(update)
        else:
            rejected.append(Rejection(update, problem[1], problem[0]))
    if not accepted:
        raise AggregationError("no valid update to aggregate")
    result: dict[str, np.ndarray] = {}
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(TensorFile(u.path)) for u in accepted]
        base = stack.enter_context(TensorFile(global_path))
        for name, (shape, _) in base.layout.items():
            current = base.read(name)
            if current.dtype.kind != "f":
                result[name] = current
                continue
            combined = np.empty(shape, dtype=np.float64)
            for rows, stacked in _blocks(name, shape, readers):
                target = combined if not shape else combined[rows[0] : rows[1]]
                target[...] = _robust(stacked, rule, trim_fraction)
            result[name] = (current.astype(np.float64) + combined).astype(current.dtype)
    save_tensors(result, out_path)
    return accepted, rejected


def _blocks(
    name: str, shape: tuple[int, ...], readers: Sequence[TensorFile]
) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """Rows ``[first, stop)`` of tensor ``name`` from every reader, stacked, a block at a time."""
    if not shape:
        yield (0, 1), np.stack([reader.read(name).astype(np.float64) for reader in readers])
        return
    row_values = math.prod(shape[1:])
    rows_per_block = max(1, _BLOCK_BYTES // max(1, len(readers) * row_values * 8))
    for first in range(0, shape[0], rows_per_block):
        rows = (first, min(first + rows_per_block, shape[0]))
        yield rows, np.stack([reader.read(name, rows).astype(np.float64) for reader in readers])


def _robust(stacked: np.ndarray, rule: AggregationRule, trim_fraction: float) -> np.ndarray:
    if rule is AggregationRule.MEDIAN:
        return np.asarray(np.median(stacked, axis=0))
    drop = math.floor(trim_fraction * stacked.shape[0])
    ordered = np.sort(stacked, axis=0)
    kept = ordered[drop : stacked.shape[0] - drop]
    return np.asarray(kept.mean(axis=0))
