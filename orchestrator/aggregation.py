"""Aggregate the boards' weight updates into the next fleet model (numpy over safetensors).

An update is a board's weight delta for a round, stored as a safetensors file. Aggregation reads
one tensor at a time from every accepted update (``safe_open`` reads a tensor without loading
the file), so memory is one tensor per update plus the model being written: O(model) for
FedAvg and O(nodes × largest tensor) for the coordinate-wise rules, never O(nodes × model).

- ``fedavg``: the mean of the deltas weighted by each board's sample count;
- ``median``: the coordinate-wise median (robust to a minority of bad boards);
- ``trimmed_mean``: the coordinate-wise mean after dropping the ``trim_fraction`` largest and
  smallest values of each coordinate.

Updates are validated first against the global model (same tensor names, shapes and dtypes,
finite values); a rejected update gets a reason, and aggregation uses the rest.
"""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file


class AggregationRule(enum.StrEnum):
    FEDAVG = "fedavg"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed_mean"


class AggregationError(ValueError):
    """Nothing to aggregate, or aggregation settings that make no sense."""


@dataclass(frozen=True)
class Update:
    path: Path
    sample_count: int


@dataclass(frozen=True)
class Rejection:
    update: Update
    reason: str


def _layout(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    layout: dict[str, tuple[tuple[int, ...], str]] = {}
    with safe_open(str(path), framework="numpy") as reader:
        for name in reader.keys():  # noqa: SIM118 (a safetensors reader is not a mapping)
            tensor_slice = reader.get_slice(name)
            layout[name] = (tuple(tensor_slice.get_shape()), str(tensor_slice.get_dtype()))
    return layout


def validate_update(global_path: Path, update: Update) -> str | None:
    """Why ``update`` cannot be aggregated into the model at ``global_path``; None if it can."""
    if update.sample_count < 1:
        return f"sample count must be at least 1, got {update.sample_count}"
    try:
        expected = _layout(global_path)
        got = _layout(update.path)
    except (OSError, ValueError, SafetensorError) as exc:
        return f"not a readable safetensors file: {exc}"
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        return f"tensor names differ from the model (missing {missing[:3]}, unexpected {extra[:3]})"
    for name, (shape, dtype) in expected.items():
        if got[name] != (shape, dtype):
            got_shape, got_dtype = got[name]
            return f"tensor {name!r} is {got_dtype}{list(got_shape)}, expected {dtype}{list(shape)}"
    with safe_open(str(update.path), framework="numpy") as reader:
        for name in expected:
            values = reader.get_tensor(name)
            if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
                return f"tensor {name!r} has non-finite values"
    return None


def aggregate(
    global_path: Path,
    updates: Sequence[Update],
    rule: AggregationRule,
    out_path: Path,
    trim_fraction: float = 0.1,
) -> tuple[list[Update], list[Rejection]]:
    """Write ``global + aggregate(deltas)`` to ``out_path``; return accepted and rejected."""
    if not 0 <= trim_fraction < 0.5:
        raise AggregationError(f"trim fraction must be in [0, 0.5), got {trim_fraction}")
    accepted: list[Update] = []
    rejected: list[Rejection] = []
    for update in updates:
        reason = validate_update(global_path, update)
        if reason is None:
            accepted.append(update)
        else:
            rejected.append(Rejection(update, reason))
    if not accepted:
        raise AggregationError("no valid update to aggregate")
    weights = np.array([u.sample_count for u in accepted], dtype=np.float64)
    weights /= weights.sum()
    result: dict[str, np.ndarray] = {}
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(safe_open(str(u.path), framework="numpy")) for u in accepted]
        base = stack.enter_context(safe_open(str(global_path), framework="numpy"))
        for name in base.keys():  # noqa: SIM118
            current = base.get_tensor(name)
            if current.dtype.kind != "f":
                # Counters such as BatchNorm's num_batches_tracked: keep the global value.
                result[name] = current
                continue
            combined = _combine(name, readers, weights, rule, trim_fraction)
            result[name] = (current.astype(np.float64) + combined).astype(current.dtype)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    save_file(result, str(partial))
    partial.replace(out_path)
    return accepted, rejected


def _combine(
    name: str,
    readers: Sequence[Any],
    weights: np.ndarray,
    rule: AggregationRule,
    trim_fraction: float,
) -> np.ndarray:
    if rule is AggregationRule.FEDAVG:
        total: np.ndarray | None = None
        for reader, weight in zip(readers, weights, strict=True):
            delta = reader.get_tensor(name).astype(np.float64) * weight
            total = delta if total is None else total + delta
        assert total is not None, "at least one update is accepted"
        return total
    stacked = np.stack([reader.get_tensor(name).astype(np.float64) for reader in readers])
    if rule is AggregationRule.MEDIAN:
        return np.asarray(np.median(stacked, axis=0))
    drop = math.floor(trim_fraction * stacked.shape[0])
    ordered = np.sort(stacked, axis=0)
    kept = ordered[drop : stacked.shape[0] - drop]
    return np.asarray(kept.mean(axis=0))
