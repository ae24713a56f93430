"""FedAvg folded as updates arrive: a float64 running sum per open round, in lanes that fold
concurrently; closing the round only divides and writes the model. Memory: O(model), whatever
the number of boards."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from orchestrator.aggregation.checks import (
    Problem,
    Update,
    Verdict,
    floating_names,
    layout_problem,
    unreadable,
)
from orchestrator.aggregation.errors import AggregationError
from orchestrator.aggregation.tensor_file import (
    Layout,
    TensorFile,
    model_layout,
    save_tensors,
)

FOLD_LANES = 2
"""How many updates a running sum folds at once, each into its own float64 partial sum.

Folding is a read and three passes over the model; with one sum, the hundred uploads of a
round queued for it one by one. Each lane costs a float64 copy of the model (28 MB for
MobileNetV2) and is made only when every existing lane is busy."""
_SETTLE_WAIT_S = 60.0
"""How long writing a sum waits for folds still in flight to be settled by their uploads."""


class SumClosed(AggregationError):
    """The sum was written (its round closed): it takes no more updates."""


class AlreadyFolded(AggregationError):
    """An update under this key is folded in already, or being folded."""


_BLOCK_VALUES = 1 << 15
"""Values weighted and added per step: the float64 block (256 KiB) stays in the CPU cache. With
a whole-tensor temporary, which went out to memory and back, the arithmetic of a MobileNetV2
fold took 9.5 ms; blocked, with the finiteness check on the float32 values, 6.2 ms."""


class _Lane:
    """One partial sum: Σ samples × delta over the updates folded into this lane."""

    def __init__(self, layout: Layout) -> None:
        self.sums = {
            name: np.zeros(layout[name][0], dtype=np.float64) for name in floating_names(layout)
        }
        # Reused for every update: fresh buffers of megabytes per tensor per update cost more in
        # page faults (the kernel zeroing new pages) than the arithmetic itself.
        largest = max((total.size for total in self.sums.values()), default=0)
        self._raw = np.empty(largest * 8, dtype=np.uint8)
        self._block = np.empty(_BLOCK_VALUES, dtype=np.float64)

    def add(self, layout: Layout, update: Update) -> Verdict:
        """Check ``update`` and add it in the same read; if it is rejected, nothing is added."""
        added: list[str] = []
        try:
            with TensorFile(update.path) as reader:
                problem = layout_problem(layout, reader.layout)
                if problem is not None:
                    return problem
                for name, total in self.sums.items():
                    values = reader.read(name, into=self._raw)
                    if not np.isfinite(values).all():
                        self._subtract(reader, added, update.sample_count)
                        return Problem.NON_FINITE, f"tensor {name!r} has non-finite values"
                    self._accumulate(total, values, update.sample_count)
                    added.append(name)
        except (OSError, ValueError) as exc:
            with contextlib.suppress(OSError, ValueError), TensorFile(update.path) as reader:
                self._subtract(reader, added, update.sample_count)
            return unreadable(exc)
        return None

    def subtract(self, update: Update) -> None:
        """Take back an update added before (``OSError``/``ValueError`` if it cannot be read)."""
        with TensorFile(update.path) as reader:
            self._subtract(reader, list(self.sums), update.sample_count)

    def _subtract(self, reader: TensorFile, names: Sequence[str], samples: int) -> None:
        # Adding the exact negation of what was added leaves a float64 rounding residue of
        # ~1e-16, invisible once written as float32.
        for name in names:
            self._accumulate(self.sums[name], reader.read(name, into=self._raw), -samples)

    def _accumulate(self, total: np.ndarray, values: np.ndarray, factor: int) -> None:
        """``total += factor × values`` in float64 (products of float32 values and integer
        sample counts are exact there), a cache-sized block at a time."""
        flat_total = total.reshape(-1)
        flat_values = values.reshape(-1)
        for start in range(0, flat_values.size, _BLOCK_VALUES):
            piece = flat_values[start : start + _BLOCK_VALUES]
            block = self._block[: piece.size]
            np.multiply(piece, factor, out=block)
            target = flat_total[start : start + piece.size]
            np.add(target, block, out=target)


class RunningSum:
    """FedAvg as a running sum: Σ samples × delta over the updates folded in so far, by tensor.

    The sums are float64 and the weights the boards' integer sample counts, so each product is
    exact and only the additions round (relative error ~1e-16 per update, far below float32's
    ~6e-8 that the model is written in); float32 sums would lose up to about ``n × 6e-8`` over
    ``n`` updates for twice less memory (28 MB instead of 14 MB for MobileNetV2), not worth it.

    Thread-safe, and built for a server that must not count an update before it is recorded:
    ``fold`` checks and adds an update *pending* (up to ``lanes`` at once, each in its own
    partial sum, so uploads do not queue for one sum); ``settle`` then keeps it or takes it back.
    ``write`` closes the sum, waits for the pending updates to be settled and writes the model.
    """

    def __init__(self, global_path: Path, lanes: int = FOLD_LANES) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, got {lanes}")
        self.global_path = global_path
        self._layout = model_layout(global_path)
        self._max_lanes = lanes
        self._lanes: list[_Lane] = []
        self._free: list[_Lane] = []
        self._pending: dict[str, Update] = {}
        self._closed = False
        self._broken = False
        self._changed = threading.Condition()
        self.total_samples = 0
        self.keys: set[str] = set()
        """Which updates count (the caller's names for them: node ids for a round)."""

    @property
    def broken(self) -> bool:
        """An update could not be taken back: the sum is wrong and must be rebuilt."""
        return self._broken

    def fold(self, key: str, update: Update) -> Verdict:
        """Check ``update`` and add it, pending until ``settle``; a rejected one adds nothing.

        Raises ``SumClosed`` once the sum is written and ``AlreadyFolded`` for a key seen before.
        """
        if update.sample_count < 1:
            return Problem.SAMPLES, f"sample count must be at least 1, got {update.sample_count}"
        with self._changed:
            if self._closed:
                raise SumClosed("the sum is written: it takes no more updates")
            if key in self.keys or key in self._pending:
                raise AlreadyFolded(f"update {key!r} is folded in already")
            self._pending[key] = update
        try:
            problem = self._with_lane(lambda lane: lane.add(self._layout, update))
        except BaseException:
            self._forget(key)
            raise
        if problem is not None:
            self._forget(key)
        return problem

    def settle(self, key: str, *, keep: bool) -> None:
        """Count the pending update ``key`` (``keep``) or take it back out of the sum."""
        with self._changed:
            update = self._pending.get(key)
        if update is None:
            raise AggregationError(f"update {key!r} is not pending")
        if not keep:
            try:
                self._with_lane(lambda lane: lane.subtract(update))
            except (OSError, ValueError):
                self._broken = True
                self._forget(key)
                raise
        with self._changed:
            del self._pending[key]
            if keep:
                self.keys.add(key)
                self.total_samples += update.sample_count
            self._changed.notify_all()

    def add(self, key: str, update: Update) -> Verdict:
        """``fold`` and keep at once (no recording between them to wait for)."""
        problem = self.fold(key, update)
        if problem is None:
            self.settle(key, keep=True)
        return problem

    def write(self, out_path: Path) -> None:
        """Write ``global + Σ samples × delta / Σ samples`` to ``out_path`` (atomically).

        Closes the sum first; folds still pending are waited for (their uploads settle them).
        """
        with self._changed:
            self._closed = True
            settled = self._changed.wait_for(lambda: not self._pending, timeout=_SETTLE_WAIT_S)
            if not settled:
                raise AggregationError(
                    f"{len(self._pending)} updates still unsettled after {_SETTLE_WAIT_S:.0f} s"
                )
        if self._broken:
            raise AggregationError("an update could not be taken back out of the sum")
        if not self.keys:
            raise AggregationError("no valid update to aggregate")
        result: dict[str, np.ndarray] = {}
        floating = set(floating_names(self._layout))
        with TensorFile(self.global_path) as base:
            for name in self._layout:
                current = base.read(name)
                if name not in floating:
                    # Counters such as BatchNorm's num_batches_tracked: keep the global value.
                    result[name] = current
                    continue
                # Into a copy, not a lane's own sum: writing twice gives the same model.
                total = self._lanes[0].sums[name].copy()
                for lane in self._lanes[1:]:
                    total += lane.sums[name]
                mean = total / self.total_samples
                result[name] = (current.astype(np.float64) + mean).astype(current.dtype)
        save_tensors(result, out_path)

    def _forget(self, key: str) -> None:
        with self._changed:
            self._pending.pop(key, None)
            self._changed.notify_all()

    def _with_lane(self, work: Callable[[_Lane], Verdict]) -> Verdict:
        with self._changed:
            if not self._free and len(self._lanes) < self._max_lanes:
                self._lanes.append(_Lane(self._layout))
                self._free.append(self._lanes[-1])
            self._changed.wait_for(lambda: bool(self._free))
            lane = self._free.pop()
        try:
            return work(lane)
        finally:
            with self._changed:
                self._free.append(lane)
                self._changed.notify_all()


class RoundSums:
    """The running sums of the open FedAvg rounds, by round id (guarded by the caller's lock)."""

    def __init__(self) -> None:
        self._sums: dict[int, RunningSum] = {}

    def get(self, round_id: int) -> RunningSum | None:
        return self._sums.get(round_id)

    def put(self, round_id: int, running: RunningSum) -> None:
        self._sums[round_id] = running

    def pop(self, round_id: int) -> RunningSum | None:
        return self._sums.pop(round_id, None)

    def keep_only(self, round_ids: set[int]) -> None:
        """Drop the sums of rounds that closed without being aggregated here (failed, cancelled)."""
        for round_id in set(self._sums) - round_ids:
            del self._sums[round_id]
