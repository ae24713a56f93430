"""Count live tensor bytes at the dispatcher, where CPU has no allocator statistics to ask.

``LiveTensorAccountant`` is a ``TorchDispatchMode``: every storage an operator hands back is
registered once (keyed by the storage, so views and aliases count once) and unregistered when
the storage is freed, seen through a weak reference to the storage's Python object. PyTorch keeps
that object alive for as long as the C++ storage lives, so the reference dies exactly when the
memory is released, wherever the last owner was (a tensor, a view, an autograd tape).

Storages that existed before the mode are unknown to it until ``track()`` registers them; a
view of an unknown storage (a parameter's ``weight.t()``, say) is not new memory and is not
counted, but an operator that grows such a storage in place counts the growth.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# ``torch.tensor(data)`` builds its result outside the dispatcher and hands it to ``lift_fresh``,
# which returns its argument: that storage is new although it looks like an alias of an input.
_FRESH_OPS = frozenset({torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default})


class _StorageRecord(weakref.ref[torch.UntypedStorage]):
    """A weak reference to one counted storage, carrying what the accountant knows of it.

    The record is its own weak reference, so the free callback receives it and no reference
    cycle keeps dead records around.
    """

    __slots__ = ("baseline_bytes", "counted_bytes", "key")

    baseline_bytes: int
    """Bytes the storage held before the accountant knew it; they are not counted."""
    counted_bytes: int
    key: int


class LiveTensorAccountant(TorchDispatchMode):
    """Live and peak tensor bytes of every storage created (or ``track``-ed) under this mode.

    Use it as a context manager around the code to measure. Frees are seen after the mode is
    exited too, so ``live_bytes`` stays right while the counted tensors die.
    """

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[int, _StorageRecord] = {}
        # Weak-reference callbacks may run in the middle of any bookkeeping (a garbage
        # collection, another thread); they only queue the dead record, and the dispatch path
        # settles the queue under the lock before it reads or changes the counters.
        self._freed: deque[_StorageRecord] = deque()
        self._lock = threading.Lock()
        self._live_bytes = 0
        self._peak_bytes = 0

    @property
    def live_bytes(self) -> int:
        with self._lock:
            self._settle_frees()
            return self._live_bytes

    @property
    def peak_bytes(self) -> int:
        with self._lock:
            self._settle_frees()
            return self._peak_bytes

    def reset_peak(self) -> None:
        """Start a new peak from what is live now."""
        with self._lock:
            self._settle_frees()
            self._peak_bytes = self._live_bytes

    def track(self, *tensors: torch.Tensor) -> None:
        """Count the storages of tensors made before the mode (inputs, parameters, gradients)."""
        with self._lock:
            self._settle_frees()
            for tensor in tensors:
                storage = _storage_of(tensor)
                if storage is not None and self._record_of(storage) is None:
                    self._register(storage, baseline_bytes=0)
            self._peak_bytes = max(self._peak_bytes, self._live_bytes)

    def __torch_dispatch__(
        self,
        func: Callable[..., Any],
        types: object,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        inputs = {id(s): (s, s.nbytes()) for s in _storages(tree_leaves((args, kwargs)))}
        result = func(*args, **kwargs)
        with self._lock:
            self._settle_frees()
            fresh = func in _FRESH_OPS
            for storage in _storages(tree_leaves(result)):
                if self._record_of(storage) is None and (fresh or id(storage) not in inputs):
                    self._register(storage, baseline_bytes=0)
            for storage, bytes_before in inputs.values():
                record = self._record_of(storage)
                if record is None and storage.nbytes() > bytes_before:
                    self._register(storage, baseline_bytes=bytes_before)
            self._refresh_sizes(inputs, result)
            self._peak_bytes = max(self._peak_bytes, self._live_bytes)
        return result

    def _refresh_sizes(
        self, inputs: Mapping[int, tuple[torch.UntypedStorage, int]], result: object
    ) -> None:
        """Resize and ``out=`` operators may grow (or shrink) a counted storage in place."""
        seen = [storage for storage, _ in inputs.values()]
        seen.extend(_storages(tree_leaves(result)))
        for storage in seen:
            record = self._record_of(storage)
            if record is not None:
                counted = max(storage.nbytes() - record.baseline_bytes, 0)
                self._live_bytes += counted - record.counted_bytes
                record.counted_bytes = counted

    def _record_of(self, storage: torch.UntypedStorage) -> _StorageRecord | None:
        record = self._records.get(id(storage))
        # An id can outlive its storage until the free is settled, and then name a new one.
        if record is None or record() is not storage:
            return None
        return record

    def _register(self, storage: torch.UntypedStorage, baseline_bytes: int) -> None:
        record = _StorageRecord(storage, self._freed.append)
        record.key = id(storage)
        record.baseline_bytes = baseline_bytes
        record.counted_bytes = max(storage.nbytes() - baseline_bytes, 0)
        self._records[record.key] = record
        self._live_bytes += record.counted_bytes

    def _settle_frees(self) -> None:
        while self._freed:
            record = self._freed.popleft()
            self._live_bytes -= record.counted_bytes
            if self._records.get(record.key) is record:
                del self._records[record.key]


def _storages(leaves: Iterable[object]) -> Iterator[torch.UntypedStorage]:
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            storage = _storage_of(leaf)
            if storage is not None:
                yield storage


def _storage_of(tensor: torch.Tensor) -> torch.UntypedStorage | None:
    """The storage holding ``tensor``'s memory, or None where there is none to count."""
    if tensor.device.type == "meta" or tensor.is_sparse or tensor.is_nested:
        return None
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None
