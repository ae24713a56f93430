"""One interface to live and peak tensor memory on any device the profiler and executor run on.

CPU has no allocator statistics, so ``LiveTensorAccountant`` counts storages at the dispatcher;
CUDA's caching allocator already counts every tensor (rounded to its 512-byte blocks).
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, runtime_checkable

import torch

from checkpointing.execution.accountant import LiveTensorAccountant


class MeterError(ValueError):
    """A device that no memory meter can measure."""


@runtime_checkable
class MemoryMeter(Protocol):
    """Live and peak tensor bytes while the meter is entered (as a context manager)."""

    def __enter__(self) -> MemoryMeter: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    @property
    def live_bytes(self) -> int: ...

    @property
    def peak_bytes(self) -> int: ...

    def reset_peak(self) -> None:
        """Start a new peak from what is live now."""

    def track(self, *tensors: torch.Tensor) -> None:
        """Count tensors allocated before the meter was entered (a no-op where all are seen)."""


class CudaMemoryMeter:
    """The CUDA caching allocator's own counters for one device."""

    def __init__(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise MeterError(f"CudaMemoryMeter measures a CUDA device, got {device}")
        self.device = device

    def __enter__(self) -> CudaMemoryMeter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    @property
    def live_bytes(self) -> int:
        return torch.cuda.memory_allocated(self.device)

    @property
    def peak_bytes(self) -> int:
        return torch.cuda.max_memory_allocated(self.device)

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def track(self, *tensors: torch.Tensor) -> None:
        """Nothing to do: the allocator already counts every tensor on the device."""


def memory_meter(device: torch.device) -> MemoryMeter:
    """A fresh meter for ``device``: the dispatcher accountant on CPU, the allocator on CUDA."""
    if device.type == "cpu":
        return LiveTensorAccountant()
    if device.type == "cuda":
        return CudaMemoryMeter(device)
    raise MeterError(f"no memory meter for device type {device.type!r} (cpu and cuda only)")
