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

``VmRSS`` splits into ``RssAnon`` (what the process itself allocated), ``RssFile`` (mapped files:
code, mostly) and ``RssShmem``. The file part is not the process's to decide: the kernel maps
pages of a file that are already in the page cache around each one touched, so the same
libraries gave 323 MB or 526 MB of ``RssFile`` with the same 380 MB of anonymous memory, by how
the files sat in the cache; and under a memory limit it reclaims file pages before anything
else. What a process needs of its files is the pages it uses: writing ``1`` to ``clear_refs``
clears every page's referenced bit, and after some work ``smaps``' ``Referenced`` lines count the
pages used since (``referenced_file_bytes``).

This module imports no torch: the coordinator side may use it, and the runtime baseline is
measured in a fresh interpreter so that it holds only what the imports themselves cost.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_STATUS = Path("/proc/self/status")
_SMAPS = Path("/proc/self/smaps")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RANGE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)\s")
_RESET_PEAK_RSS = "5"
_CLEAR_REFERENCED = "1"

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
    return _status_fields(pid, (field,))[field]


def _status_fields(pid: int | None, names: tuple[str, ...]) -> dict[str, int]:
    status_path = _STATUS if pid is None else Path(f"/proc/{pid}/status")
    try:
        text = status_path.read_text()
    except OSError as error:
        raise ProcessMemoryError(f"cannot read {status_path}: {error}") from error
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in names:
            amount, unit = value.split()
            assert unit == "kB", f"{status_path} reports {name} in {unit}"
            found[name] = int(amount) * 1024
    missing = [name for name in names if name not in found]
    if missing:
        raise ProcessMemoryError(f"{status_path} has no {', '.join(missing)} field")
    return found


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory now (``VmRSS``) of this process, or of ``pid``."""
    return status_bytes("VmRSS", pid)


def peak_rss_bytes(pid: int | None = None) -> int:
    """Largest resident memory (``VmHWM``) since start or the last ``reset_peak_rss()``."""
    return status_bytes("VmHWM", pid)


@dataclass(frozen=True)
class ResidentMemory:
    """One reading of a process's resident memory, by kind (bytes)."""

    rss_bytes: int
    rss_anon_bytes: int
    rss_file_bytes: int
    rss_shmem_bytes: int
    peak_rss_bytes: int

    @property
    def peak_private_bytes(self) -> int:
        """The high-water mark without the file pages mapped now. Not a guard's figure: when
        the kernel reclaims file pages after the peak (a cgroup under pressure), it overstates
        the private peak by what was reclaimed (measured in the demo: 40-75 MB)."""
        return self.peak_rss_bytes - self.rss_file_bytes


def resident_memory(pid: int | None = None) -> ResidentMemory:
    """``VmRSS``, ``RssAnon``, ``RssFile``, ``RssShmem`` and ``VmHWM`` of a process."""
    fields = _status_fields(pid, ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"))
    return ResidentMemory(
        rss_bytes=fields["VmRSS"],
        rss_anon_bytes=fields["RssAnon"],
        rss_file_bytes=fields["RssFile"],
        rss_shmem_bytes=fields["RssShmem"],
        peak_rss_bytes=fields["VmHWM"],
    )


def _write_clear_refs(value: str) -> bool:
    try:
        with _CLEAR_REFS.open("w") as clear_refs:
            clear_refs.write(value)
    except OSError:
        return False
    return True


def reset_peak_rss() -> bool:
    """Start this process's ``VmHWM`` anew from its current RSS; False where the kernel can't."""
    return _write_clear_refs(_RESET_PEAK_RSS)


def clear_referenced() -> bool:
    """Clear the referenced bit of every page of this process; False where the kernel can't."""
    return _write_clear_refs(_CLEAR_REFERENCED)


@dataclass
class SmapsMapping:
    """One mapping of ``/proc/<pid>/smaps``: its address range and resident figures (bytes)."""

    start: int
    end: int
    file_backed: bool
    rss_bytes: int = 0
    anon_bytes: int = 0
    referenced_bytes: int = 0

    @property
    def referenced_file_bytes(self) -> int:
        """Pages of the file this mapping used: a private file mapping's written pages are
        anonymous (``RssAnon`` has them), and ``Referenced`` counts them too."""
        if not self.file_backed:
            return 0
        return min(self.referenced_bytes, self.rss_bytes - self.anon_bytes)


def smaps_mappings(smaps_text: str) -> list[SmapsMapping]:
    """The mappings of an ``smaps`` text; ``ProcessMemoryError`` if it is not in its format."""
    mappings: list[SmapsMapping] = []
    for line in smaps_text.splitlines():
        header = _RANGE.match(line)
        if header:
            # range, permissions, offset, device, inode, path: a file has an inode and a path
            # (anonymous memory has inode 0, and [heap] or [stack] or no name).
            fields = line.split(maxsplit=5)
            file_backed = len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/")
            mappings.append(SmapsMapping(int(header[1], 16), int(header[2], 16), file_backed))
        elif not mappings:
            raise ProcessMemoryError(f"smaps text starts with {line!r}, not a mapping's range")
        elif line.startswith("Rss:"):
            mappings[-1].rss_bytes = kib_field_bytes(line)
        elif line.startswith("Anonymous:"):
            mappings[-1].anon_bytes = kib_field_bytes(line)
        elif line.startswith("Referenced:"):
            mappings[-1].referenced_bytes = kib_field_bytes(line)
    return mappings


def kib_field_bytes(line: str) -> int:
    """The bytes of a ``Name:   123 kB`` line."""
    parts = line.split()
    if len(parts) != 3 or parts[2] != "kB" or not parts[1].isdigit():
        raise ProcessMemoryError(f"not a 'Name: N kB' line: {line!r}")
    return int(parts[1]) * 1024


def referenced_file_bytes(smaps: Path = _SMAPS) -> int:
    """Bytes of file-backed pages this process used since ``clear_referenced()`` (all of them
    still resident if it was never called)."""
    try:
        text = smaps.read_text()
    except OSError as error:
        raise ProcessMemoryError(f"cannot read {smaps}: {error}") from error
    return sum(mapping.referenced_file_bytes for mapping in smaps_mappings(text))


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
