"""What a board is, as the agent measures it: RAM, cores, CPU model, architecture, accelerator.

The runtime baseline, the resident memory of this process once its libraries are imported and
warmed up (``node_agent.runtime``) and its frames loaded, but before any model exists, is read
from the kernel at startup: it is what every training step sits on, and the planner counts it
as a fixed term of the budget.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from protos.edgefleet.v1 import common_pb2

_MEMINFO = Path("/proc/meminfo")
_CPUINFO = Path("/proc/cpuinfo")
_CPU_KEYS = ("model name", "Hardware", "Processor", "cpu model")


@dataclass(frozen=True)
class BoardHardware:
    ram_bytes: int
    memory_budget_bytes: int
    num_cores: int
    cpu_model: str
    arch: str
    accelerator: str
    accelerator_memory_bytes: int
    torch_version: str
    runtime_baseline_bytes: int

    def to_proto(self) -> common_pb2.Hardware:
        return common_pb2.Hardware(
            ram_bytes=self.ram_bytes,
            memory_budget_bytes=self.memory_budget_bytes,
            num_cores=self.num_cores,
            cpu_model=self.cpu_model,
            arch=self.arch,
            accelerator=self.accelerator,
            accelerator_memory_bytes=self.accelerator_memory_bytes,
            torch_version=self.torch_version,
            runtime_baseline_bytes=self.runtime_baseline_bytes,
        )


def ram_bytes(meminfo: Path = _MEMINFO) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no MemTotal in {meminfo}")


def cpu_model(cpuinfo: Path = _CPUINFO) -> str:
    """The kernel's name for the CPU; ARM boards name it under other keys than x86 ones."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    for key in _CPU_KEYS:
        for line in lines:
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or "unknown"


def detect(memory_budget_bytes: int, runtime_baseline_bytes: int) -> BoardHardware:
    accelerator = ""
    accelerator_memory = 0
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        accelerator = f"cuda:{properties.name}"
        accelerator_memory = int(properties.total_memory)
    return BoardHardware(
        ram_bytes=ram_bytes(),
        memory_budget_bytes=memory_budget_bytes,
        num_cores=len(os.sched_getaffinity(0)),
        cpu_model=cpu_model(),
        arch=platform.machine(),
        accelerator=accelerator,
        accelerator_memory_bytes=accelerator_memory,
        torch_version=torch.__version__.split("+")[0],
        runtime_baseline_bytes=runtime_baseline_bytes,
    )
