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

from __future__ import annotations

import contextlib
import enum
import functools
import json
import math
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
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


class Problem(enum.Enum):
    """What is wrong with an update, for callers that react by kind (metrics, the protocol)."""

    SAMPLES = "samples"
    FORMAT = "format"
    SHAPE = "shape"
    NON_FINITE = "non_finite"


@dataclass(frozen=True)
class Rejection:
    update: Update
    reason: str
    problem: Problem


Verdict = tuple[Problem, str] | None
"""What is wrong with an update and why; None when nothing is."""

Layout = dict[str, tuple[tuple[int, ...], str]]
"""Tensor name -> (shape, safetensors dtype name)."""

_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER_BYTES = 100 << 20
"""The safetensors format's own limit on the JSON header."""
_BLOCK_BYTES = 32 << 20
"""What one block of the coordinate-wise rules may hold: rows of every update, as float64."""


@dataclass(frozen=True)
class _Entry:
    shape: tuple[int, ...]
    dtype: str
    start: int
    """Absolute offset of the tensor's bytes in the file."""


class TensorFile:
    """A safetensors file read tensor by tensor (or rows of one) with ``os.pread``.

    The header is parsed and checked on opening (every tensor's byte range lies in the file and
    matches its shape and dtype); a malformed file raises ``ValueError``.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self._entries = self._parse(os.fstat(self._fd).st_size)
        except BaseException:
            os.close(self._fd)
            raise

    def _parse(self, file_bytes: int) -> dict[str, _Entry]:
        prefix = os.pread(self._fd, 8, 0)
        if len(prefix) != 8:
            raise ValueError("shorter than a safetensors header")
        (header_bytes,) = struct.unpack("<Q", prefix)
        if header_bytes > min(_MAX_HEADER_BYTES, file_bytes - 8):
            raise ValueError(f"header of {header_bytes} bytes does not fit the file")
        try:
            header = json.loads(os.pread(self._fd, header_bytes, 8))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"header is not JSON: {exc}") from None
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        base = 8 + header_bytes
        entries: dict[str, _Entry] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = _DTYPES[info["dtype"]]
                shape = tuple(int(size) for size in info["shape"])
                begin, end = (int(offset) for offset in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"tensor {name!r}: unreadable or unsupported entry") from None
            if min(shape, default=0) < 0 or end - begin != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"tensor {name!r}: byte range does not match its shape")
            if begin < 0 or base + end > file_bytes:
                raise ValueError(f"tensor {name!r}: bytes beyond the end of the file")
            entries[name] = _Entry(shape, str(info["dtype"]), base + begin)
        return entries

    @property
    def layout(self) -> Layout:
        return {name: (entry.shape, entry.dtype) for name, entry in self._entries.items()}

    def read(
        self, name: str, rows: tuple[int, int] | None = None, *, into: np.ndarray | None = None
    ) -> np.ndarray:
        """Tensor ``name``, or its rows ``[first, stop)`` along the first dimension.

        ``into``: a byte buffer (uint8) to read into and return a view of, when large enough.
        """
        entry = self._entries[name]
        dtype = _DTYPES[entry.dtype]
        shape = entry.shape
        offset = entry.start
        if rows is not None and shape:
            first, stop = rows
            row_bytes = math.prod(shape[1:]) * dtype.itemsize
            offset += first * row_bytes
            shape = (stop - first, *shape[1:])
        size = math.prod(shape) * dtype.itemsize
        if into is not None and into.size >= size:
            buffer = into[:size]
        else:
            buffer = np.empty(size, dtype=np.uint8)
        done = 0
        while done < buffer.size:
            got = os.preadv(self._fd, [buffer[done:].data], offset + done)
            if got == 0:
                raise ValueError(f"tensor {name!r}: the file ended early")
            done += got
        return buffer.view(dtype).reshape(shape)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> TensorFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@functools.lru_cache(maxsize=32)
def _cached_layout(path: str, modified_ns: int, size: int) -> Layout:
    with TensorFile(Path(path)) as reader:
        return reader.layout


def model_layout(path: Path) -> Layout:
    """The layout of the model at ``path``, read once per file version.

    Every update of a round is checked against the same global model; re-reading its header
    for each of a hundred uploads was measurable. Stored models are content-addressed and never
    change; the key still carries mtime and size so a rewritten file is read again.
    """
    status = path.stat()
    return _cached_layout(str(path), status.st_mtime_ns, status.st_size)


def _layout_problem(expected: Layout, got: Layout) -> Verdict:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        return (
            Problem.SHAPE,
            f"tensor names differ from the model (missing {missing[:3]}, unexpected {extra[:3]})",
        )
    for name, (shape, dtype) in expected.items():
        if got[name] != (shape, dtype):
            got_shape, got_dtype = got[name]
            return (
                Problem.SHAPE,
                f"tensor {name!r} is {got_dtype}{list(got_shape)}, expected {dtype}{list(shape)}",
            )
    return None


def _unreadable(exc: Exception) -> Verdict:
    return Problem.FORMAT, f"not a readable safetensors file: {exc}"


def _floating(layout: Layout) -> list[str]:
    return [name for name, (_, dtype) in layout.items() if dtype.startswith("F")]


def check_update(global_path: Path, update: Update) -> Verdict:
    """What is wrong with ``update`` for the model at ``global_path``, and why; None if nothing."""
    if update.sample_count < 1:
        return Problem.SAMPLES, f"sample count must be at least 1, got {update.sample_count}"
    try:
        expected = model_layout(global_path)
        with TensorFile(update.path) as reader:
            problem = _layout_problem(expected, reader.layout)
            if problem is not None:
                return problem
            for name in _floating(expected):
                if not np.isfinite(reader.read(name)).all():
                    return Problem.NON_FINITE, f"tensor {name!r} has non-finite values"
    except (OSError, ValueError) as exc:
        return _unreadable(exc)
    return None


def validate_update(global_path: Path, update: Update) -> str | None:
    """Why ``update`` cannot be aggregated into the model at ``global_path``; None if it can."""
    problem = check_update(global_path, update)
    return None if problem is None else problem[1]


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
            name: np.zeros(layout[name][0], dtype=np.float64) for name in _floating(layout)
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
                problem = _layout_problem(layout, reader.layout)
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
            return _unreadable(exc)
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
        floating = set(_floating(self._layout))
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
        _save(result, out_path)

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
    _save(result, out_path)
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


def _save(tensors: dict[str, np.ndarray], out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    save_file(tensors, str(partial))
    partial.replace(out_path)
