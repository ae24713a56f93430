"""A program's own resident memory when it runs under QEMU user-mode emulation, apart from qemu's.

An emulated board (``edgefleet bench board``) is one host process: the arm64 program and qemu,
which translates it. Read from inside the program:

- ``/proc/self/status`` (``VmRSS``, ``RssAnon``, ``RssFile``) is the host kernel's count for the
  whole process: the program's pages and qemu's own (its translation cache, heap and libraries),
  tens to hundreds of MB that a real board does not hold.
- ``/proc/self/maps`` is emulated by qemu and lists only the program's (the guest's) mappings.
- ``/proc/self/smaps`` is passed through by qemu 7.2: the host's view of every mapping, with its
  resident size. (qemu 10 emulates it too and reports ``Rss: 0``: ``GuestMemory`` is then
  all zeros, which the caller must refuse.)

Summing smaps' ``Rss`` over the address ranges that maps lists gives the guest's own resident
memory, and ``Anonymous`` its anonymous part: what the board itself would hold. Natively, maps
and smaps list the same ranges, and the guest's figure is the process's ``VmRSS`` within the few
pages by which status's counters lag.

Standard library and ``checkpointing.execution.process_memory`` (the smaps parser the agent uses)
only: the guest's probe imports it under emulation, where nothing else of the host's may load, and
the host side and the tests import it without torch.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from checkpointing.execution.process_memory import (
    ProcessMemoryError,
    kib_field_bytes,
    smaps_mappings,
)

_PROC_SELF = Path("/proc/self")
_RANGE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)\s")


class GuestMemoryError(RuntimeError):
    """The memory files cannot be read or are not in the kernel's format."""


@dataclass(frozen=True)
class GuestMemory:
    """The guest's own resident memory beside the host's count of the whole process."""

    guest_rss_bytes: int
    """Resident bytes of the mappings the guest has (smaps ``Rss`` over maps' ranges)."""
    guest_anon_bytes: int
    """Their anonymous part (smaps ``Anonymous``: heap, stacks, tensors, copied-on-write)."""
    guest_file_bytes: int
    """The rest: file-backed pages (code, mapped data files) and shared memory."""
    guest_referenced_file_bytes: int
    """Pages of the guest's file mappings referenced since this process last wrote ``1`` to
    ``/proc/self/clear_refs`` (all its resident file pages if it never did): the runtime's file
    allowance (``node_agent.runtime.measure_runtime``). Pages of a private file mapping that were
    written (relocated data) are anonymous, counted in ``guest_anon_bytes`` and not here.

    Under emulation it is a lower bound: qemu runs code it translated before the clear from its
    own cache, so a guest code page used then and again since reads as unreferenced."""
    status_rss_bytes: int
    """``VmRSS`` of the process; under qemu-user it includes qemu's own memory."""
    status_anon_bytes: int
    """``RssAnon``, qemu's included likewise."""
    status_file_bytes: int
    """``RssFile``, qemu's included likewise."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if self.guest_referenced_file_bytes > self.guest_file_bytes:
            raise ValueError(
                f"guest referenced file bytes ({self.guest_referenced_file_bytes}) cannot exceed "
                f"its file bytes ({self.guest_file_bytes})"
            )
        if self.guest_anon_bytes + self.guest_file_bytes != self.guest_rss_bytes:
            raise ValueError(
                f"guest anonymous ({self.guest_anon_bytes}) and file ({self.guest_file_bytes}) "
                f"bytes must add up to its rss ({self.guest_rss_bytes})"
            )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def address_ranges(maps_text: str) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges a ``maps`` (or ``smaps``) text lists, sorted and merged."""
    ranges = sorted(
        (int(match[1], 16), int(match[2], 16))
        for match in (_RANGE.match(line) for line in maps_text.splitlines())
        if match
    )
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _status_bytes(status_text: str, field: str) -> int:
    for line in status_text.splitlines():
        if line.startswith(f"{field}:"):
            try:
                return kib_field_bytes(line)
            except ProcessMemoryError as error:
                raise GuestMemoryError(str(error)) from error
    raise GuestMemoryError(f"the status text has no {field} field")


def _overlaps(ranges: list[tuple[int, int]], starts: list[int], start: int, end: int) -> bool:
    """Whether ``[start, end)`` meets one of the sorted, disjoint ``ranges``."""
    index = bisect.bisect_right(starts, start) - 1
    if index >= 0 and ranges[index][1] > start:
        return True
    return index + 1 < len(ranges) and ranges[index + 1][0] < end


def guest_memory_from(maps_text: str, smaps_text: str, status_text: str) -> GuestMemory:
    """The figures from the three files' texts, read from inside the (emulated) process.

    A mapping of smaps counts for the guest when it meets a range of maps: qemu lists a host
    mapping of the guest's whole, or clipped at the top of the guest's address space.
    """
    ranges = address_ranges(maps_text)
    starts = [start for start, _ in ranges]
    rss = anon = referenced_file = 0
    try:
        mappings = smaps_mappings(smaps_text)
    except ProcessMemoryError as error:
        raise GuestMemoryError(str(error)) from error
    for mapping in mappings:
        if _overlaps(ranges, starts, mapping.start, mapping.end):
            rss += mapping.rss_bytes
            anon += mapping.anon_bytes
            referenced_file += mapping.referenced_file_bytes
    return GuestMemory(
        guest_rss_bytes=rss,
        guest_anon_bytes=anon,
        guest_file_bytes=rss - anon,
        guest_referenced_file_bytes=referenced_file,
        status_rss_bytes=_status_bytes(status_text, "VmRSS"),
        status_anon_bytes=_status_bytes(status_text, "RssAnon"),
        status_file_bytes=_status_bytes(status_text, "RssFile"),
    )


def read_guest_memory(proc_dir: Path = _PROC_SELF) -> GuestMemory:
    """This process's figures now (``proc_dir``: its ``/proc`` directory).

    maps is read first: a mapping made between the reads is left out rather than counted
    without its range. ``GuestMemoryError`` if a file cannot be read (not Linux).
    """
    texts: list[str] = []
    for name in ("maps", "smaps", "status"):
        try:
            texts.append((proc_dir / name).read_text())
        except OSError as error:
            raise GuestMemoryError(f"cannot read {proc_dir / name}: {error}") from error
    return guest_memory_from(*texts)
