from __future__ import annotations

import pytest
import torch

from checkpointing.execution.accountant import LiveTensorAccountant
from checkpointing.execution.meter import CudaMemoryMeter, MemoryMeter, MeterError, memory_meter


def test_cpu_gets_the_dispatcher_accountant() -> None:
    meter = memory_meter(torch.device("cpu"))

    with meter:
        kept = torch.empty(256, dtype=torch.uint8)

    assert isinstance(meter, LiveTensorAccountant)
    assert isinstance(meter, MemoryMeter)
    assert meter.live_bytes == 256
    del kept


def test_unsupported_device_is_a_user_error() -> None:
    with pytest.raises(MeterError, match="meta"):
        memory_meter(torch.device("meta"))
    with pytest.raises(MeterError, match="CUDA"):
        CudaMemoryMeter(torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_meter_follows_the_allocator() -> None:
    device = torch.device("cuda")
    meter = memory_meter(device)

    with meter:
        start = meter.live_bytes
        meter.reset_peak()
        block = torch.empty(1 << 20, dtype=torch.uint8, device=device)
        with_block = meter.live_bytes
        del block
        peak = meter.peak_bytes

    assert isinstance(meter, CudaMemoryMeter)
    assert with_block - start == 1 << 20
    assert peak - start == 1 << 20
    assert meter.live_bytes == start
