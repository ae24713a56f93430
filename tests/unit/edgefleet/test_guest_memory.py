"""The guest-memory reader: smaps' Rss summed over the ranges that maps lists."""

import mmap
import os
import re
from pathlib import Path

import pytest

from edgefleet.board.guest_memory import (
    GuestMemory,
    GuestMemoryError,
    address_ranges,
    guest_memory_from,
    read_guest_memory,
)

# What an emulated program sees: qemu lists the guest's mappings only (the python binary, a heap
# and a library), while smaps and status are the host's, qemu's own mappings included.
MAPS = """\
00400000-00916000 r-xp 00000000 fe:00 16041118          /rootfs/usr/bin/python3.11
00930000-00a5f000 rw-p 00520000 fe:00 16041118          /rootfs/usr/bin/python3.11
00a5f000-01059000 rw-p 00000000 00:00 0
5500860000-55008e2000 r-xp 00000000 fe:00 16040076      /rootfs/lib/aarch64-linux-gnu/libm.so.6
"""


def _smaps_entry(header: str, rss_kib: int, anon_kib: int, referenced_kib: int) -> str:
    return (
        f"{header}\n"
        f"Size:               9000 kB\n"
        f"Rss:              {rss_kib:>6} kB\n"
        f"Pss:              {rss_kib:>6} kB\n"
        f"Referenced:       {referenced_kib:>6} kB\n"
        f"Anonymous:        {anon_kib:>6} kB\n"
        f"THPeligible:    0\n"
        f"VmFlags: rd ex mr mw me\n"
    )


SMAPS = "".join(
    [
        _smaps_entry(
            "00400000-00916000 r--p 00000000 fe:00 16041118   /rootfs/usr/bin/python3.11",
            rss_kib=3000,
            anon_kib=0,
            referenced_kib=1000,
        ),
        # Relocated data: written pages of a file mapping are anonymous (and referenced).
        _smaps_entry(
            "00930000-00a5f000 rw-p 00520000 fe:00 16041118   /rootfs/usr/bin/python3.11",
            rss_kib=1000,
            anon_kib=800,
            referenced_kib=1000,
        ),
        _smaps_entry("00a5f000-01059000 rw-p 00000000 00:00 0", 4000, 4000, 4000),
        # qemu's own: its heap and its code, in no range of maps.
        _smaps_entry("564dab2af000-564dab6df000 rw-p 00000000 00:00 0   [heap]", 20000, 20000, 0),
        _smaps_entry(
            "7f0000000000-7f0000100000 r-xp 00000000 fe:00 99   /usr/lib/libglib-2.0.so.0",
            900,
            0,
            900,
        ),
        _smaps_entry(
            "5500860000-55008e2000 r-xp 00000000 fe:00 16040076   /rootfs/lib/libm.so.6",
            500,
            0,
            100,
        ),
    ]
)

STATUS = """\
Name:\tqemu-aarch64
VmPeak:\t  300000 kB
VmRSS:\t   29400 kB
RssAnon:\t   24800 kB
RssFile:\t    4600 kB
RssShmem:\t       0 kB
Threads:\t1
"""


def test_the_guest_is_what_maps_lists_and_status_is_the_whole_process() -> None:
    memory = guest_memory_from(MAPS, SMAPS, STATUS)

    assert memory == GuestMemory(
        guest_rss_bytes=(3000 + 1000 + 4000 + 500) * 1024,
        guest_anon_bytes=(800 + 4000) * 1024,
        guest_file_bytes=(3000 + 200 + 500) * 1024,
        # The data mapping's 200 file pages are referenced; its 800 written ones are anonymous.
        guest_referenced_file_bytes=(1000 + 200 + 100) * 1024,
        status_rss_bytes=29400 * 1024,
        status_anon_bytes=24800 * 1024,
        status_file_bytes=4600 * 1024,
    )


def test_a_mapping_split_or_clipped_since_maps_was_read_still_counts() -> None:
    maps = "1000-3000 rw-p 00000000 00:00 0\n"
    smaps = _smaps_entry("0000-2000 rw-p 00000000 00:00 0", 4, 4, 4) + _smaps_entry(
        "2000-4000 rw-p 00000000 00:00 0", 4, 4, 4
    )

    memory = guest_memory_from(maps, smaps, STATUS)

    assert memory.guest_rss_bytes == 8 * 1024


def test_qemu_10_reporting_rss_0_gives_zeros() -> None:
    smaps = re.sub(r"^(Rss|Anonymous|Referenced):\s+\d+ kB$", r"\1: 0 kB", SMAPS, flags=re.M)

    memory = guest_memory_from(MAPS, smaps, STATUS)

    assert memory.guest_rss_bytes == memory.guest_anon_bytes == 0


def test_address_ranges_are_sorted_and_merged() -> None:
    maps = (
        "5000-6000 r--p 00000000 00:00 0\n"
        "1000-2000 r--p 00000000 00:00 0\n"
        "2000-3000 r--p 00000000 00:00 0\n"
    )

    assert address_ranges(maps) == [(0x1000, 0x3000), (0x5000, 0x6000)]


@pytest.mark.parametrize(
    ("smaps", "status"),
    [
        ("Rss: 4 kB\n", STATUS),
        (SMAPS.replace("kB\nPss", "MB\nPss", 1), STATUS),
        (SMAPS, STATUS.replace("RssFile", "Rss_File")),
    ],
)
def test_malformed_text_is_refused(smaps: str, status: str) -> None:
    with pytest.raises(GuestMemoryError):
        guest_memory_from(MAPS, smaps, status)


def test_inconsistent_figures_are_refused() -> None:
    with pytest.raises(ValueError, match="add up"):
        GuestMemory(10, 4, 5, 0, 10, 4, 6)
    with pytest.raises(ValueError, match="referenced"):
        GuestMemory(10, 4, 6, 7, 10, 4, 6)
    with pytest.raises(ValueError, match="negative"):
        GuestMemory(-1, -1, 0, 0, 10, 4, 6)


def test_files_are_read_from_the_proc_directory(tmp_path: Path) -> None:
    (tmp_path / "maps").write_text(MAPS)
    (tmp_path / "smaps").write_text(SMAPS)
    (tmp_path / "status").write_text(STATUS)

    assert read_guest_memory(tmp_path) == guest_memory_from(MAPS, SMAPS, STATUS)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(GuestMemoryError, match="smaps"):
        (tmp_path / "maps").write_text(MAPS)
        read_guest_memory(tmp_path)


def test_natively_the_guest_is_the_whole_process() -> None:
    # 64 MiB touched now, anonymous: both counts see it, and agree within their lag.
    block = mmap.mmap(-1, 64 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    block.write(b"\1" * len(block))

    memory = read_guest_memory()

    assert memory.guest_anon_bytes > 64 * 2**20
    # status's counters are synced lazily (per thread, in batches of pages): a few pages.
    tolerance = 256 * 1024 + 64 * 4096 * max(1, len(os.listdir("/proc/self/task")))
    assert abs(memory.guest_rss_bytes - memory.status_rss_bytes) <= tolerance
    assert abs(memory.guest_anon_bytes - memory.status_anon_bytes) <= tolerance
    block.close()
