"""What Linux's /proc says of a process and of the machine: memory, CPU time, mapped libraries.

The benchmarks read the coordinator from outside, so the figures are the whole process's (gRPC's
C core and its threads included), and read the machine's CPU time so that a run sharing the
machine with other work shows it.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgefleet.fleet_bench.processes import BenchError

_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)
"""user, nice, system, irq, softirq, steal in /proc/stat's ``cpu`` line (idle, iowait left out)."""


def status_bytes(pid: int, key: str) -> int:
    """A ``kB`` entry of ``/proc/<pid>/status`` (``VmHWM``, ``VmRSS``...) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise BenchError(f"/proc/{pid}/status gives {key} in {unit}, not kB")
            return int(value) * 1024
    raise BenchError(f"/proc/{pid}/status has no {key}")


def process_cpu_s(pid: int) -> float:
    """User plus system CPU time of every thread of the process so far."""
    # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """CPU time all cores of the machine have spent busy since boot."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    assert first[0] == "cpu", "the first line of /proc/stat sums every core"
    ticks = [int(value) for value in first[1:]]
    return sum(ticks[index] for index in _BUSY_FIELDS) / os.sysconf("SC_CLK_TCK")


def maps_library(pid: int, name: str) -> bool:
    """Whether a file whose path contains ``name`` is mapped into the process."""
    return name in Path(f"/proc/{pid}/maps").read_text()
