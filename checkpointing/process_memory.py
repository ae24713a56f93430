"""A process's resident memory, as the kernel counts it: what a board's RAM budget is spent on.

Figures come from ``/proc/<pid>/status`` (Linux):

- ``VmRSS``: the pages resident now, anonymous (heap, tensors, thread stacks) and file-backed
  (the mapped code of the interpreter, torch's shared libraries) alike. Shared-library pages count
  in full although other processes may share them: on a board running one agent nothing else
  does, and they occupy RAM all the same.
- ``VmHWM`` ("high water mark"): the largest ``VmRSS`` since the process started, or since it was
  last reset. The kernel updates it when the RSS counters are synced, so a spike shorter than
  that lag could be missed; a training step's peak lasts far longer.

Writing ``5`` to ``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS (Linux 4.0 and
later), so one process can measure its phases (imports, model, training) one at a time.

This module imports no torch: the coordinator side may use it, and the runtime baseline is
measured in a fresh interpreter so that it holds only what the imports themselves cost.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_PEAK_RSS = "5"

# The board's runtime baseline: torch and torchvision, and nothing else (importing this module
# would bring in the ``checkpointing`` package, whose solvers load numba).
_BASELINE_CODE = (
    "import torch, torchvision\n"
    "for line in open('/proc/self/status'):\n"
    "    if line.startswith('VmRSS:'):\n"
    "        print(int(line.split()[1]) * 1024)\n"
)


class ProcessMemoryError(RuntimeError):
    """The kernel's memory figures cannot be read (not Linux, or a field is missing)."""


def status_bytes(field: str, pid: int | None = None) -> int:
    """One ``kB`` field (``VmRSS``, ``RssAnon``...) of a process's status, in bytes.

    ``pid`` None is this process. ``ProcessMemoryError`` if the process is gone (or this is not
    Linux) or the field is missing.
    """
    status_path = _STATUS if pid is None else Path(f"/proc/{pid}/status")
    try:
        text = status_path.read_text()
    except OSError as error:
        raise ProcessMemoryError(f"cannot read {status_path}: {error}") from error
    prefix = f"{field}:"
    for line in text.splitlines():
        if line.startswith(prefix):
            value, unit = line[len(prefix) :].split()
            assert unit == "kB", f"{status_path} reports {field} in {unit}"
            return int(value) * 1024
    raise ProcessMemoryError(f"{status_path} has no {field} field")


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory now (``VmRSS``) of this process, or of ``pid``."""
    return status_bytes("VmRSS", pid)


def peak_rss_bytes(pid: int | None = None) -> int:
    """Largest resident memory (``VmHWM``) since start or the last ``reset_peak_rss()``."""
    return status_bytes("VmHWM", pid)


def reset_peak_rss() -> bool:
    """Start this process's ``VmHWM`` anew from its current RSS; False where the kernel can't."""
    try:
        with _CLEAR_REFS.open("w") as clear_refs:
            clear_refs.write(_RESET_PEAK_RSS)
    except OSError:
        return False
    return True


def runtime_baseline_bytes(python: str = sys.executable, timeout_s: float = 300.0) -> int:
    """RSS of a fresh interpreter right after ``import torch, torchvision``.

    Measured in a child so that nothing the caller holds (a model, a dataset, pytest) pollutes
    it. ``ProcessMemoryError`` with the child's error output if the child fails.
    """
    completed = subprocess.run(
        [python, "-c", _BASELINE_CODE],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if completed.returncode != 0:
        raise ProcessMemoryError(
            f"measuring the runtime baseline failed (exit {completed.returncode}): "
            f"{completed.stderr.strip()[-2000:]}"
        )
    return int(completed.stdout.strip().splitlines()[-1])
