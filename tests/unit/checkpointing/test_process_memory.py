"""Resident memory from the kernel: current, peak, resettable peak, and the runtime baseline."""

from __future__ import annotations

import json
import mmap
import subprocess
import sys
from pathlib import Path

import pytest

from checkpointing.execution.process_memory import (
    ProcessMemoryError,
    clear_referenced,
    peak_rss_bytes,
    referenced_file_bytes,
    resident_memory,
    rss_bytes,
    runtime_baseline_bytes,
    status_bytes,
)

_MIB = 2**20
# Above glibc's largest mmap threshold (32 MiB), so freeing it gives the pages back at once.
_BLOCK_BYTES = 96 * _MIB


def _touched_block() -> bytearray:
    # bytearray(n) zero-fills through calloc, whose fresh mmap pages stay untouched (not
    # resident) until written; one write per page makes them resident.
    block = bytearray(_BLOCK_BYTES)
    for offset in range(0, _BLOCK_BYTES, 4096):
        block[offset] = 1
    return block


# The test process's own heap, after hundreds of tests, may serve the block from pages that
# are already resident (CI once read no growth at all); a fresh interpreter measures cleanly.
_IN_A_FRESH_PROCESS = f"""
import json
from checkpointing.execution.process_memory import peak_rss_bytes, reset_peak_rss, rss_bytes

def touched():
    block = bytearray({_BLOCK_BYTES})
    for offset in range(0, {_BLOCK_BYTES}, 4096):
        block[offset] = 1
    return block

before = rss_bytes()
block = touched()
grown = rss_bytes() - before
del block

reset = reset_peak_rss()
block = touched()
del block
remembered = peak_rss_bytes() - rss_bytes()
reset_again = reset_peak_rss()
after_reset = peak_rss_bytes() - rss_bytes()
print(json.dumps(dict(grown=grown, reset=reset and reset_again, remembered=remembered,
                      after_reset=after_reset)))
"""


def _measured_in_a_fresh_process() -> dict[str, int]:
    output = subprocess.run(
        [sys.executable, "-c", _IN_A_FRESH_PROCESS],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return json.loads(output)  # type: ignore[no-any-return]


def test_rss_grows_by_what_is_touched() -> None:
    measured = _measured_in_a_fresh_process()

    assert _BLOCK_BYTES * 0.9 < measured["grown"] < _BLOCK_BYTES * 1.2, measured


def test_peak_rss_remembers_a_freed_block_until_reset() -> None:
    measured = _measured_in_a_fresh_process()

    assert measured["reset"], "Linux lets a process reset its own VmHWM"
    assert measured["remembered"] > _BLOCK_BYTES * 0.9, measured
    assert measured["after_reset"] < _BLOCK_BYTES * 0.1, measured


def test_status_of_another_process() -> None:
    code = "import sys; print('ready', flush=True); sys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", code], stdin=-1, stdout=-1, text=True) as child:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        child_rss = rss_bytes(child.pid)
        child_peak = peak_rss_bytes(child.pid)
        assert child.stdin is not None
        child.stdin.close()

    assert 1 * _MIB < child_rss <= child_peak
    with pytest.raises(ProcessMemoryError, match=f"/proc/{child.pid}/status"):
        rss_bytes(child.pid)


def test_missing_field_is_an_error() -> None:
    with pytest.raises(ProcessMemoryError, match="no VmNothing field"):
        status_bytes("VmNothing")


def test_runtime_baseline_is_torch_alone_whatever_the_caller_holds() -> None:
    alone = runtime_baseline_bytes()
    held = _touched_block()
    while_holding = runtime_baseline_bytes()
    del held

    assert alone > 100 * _MIB, "importing torch and torchvision takes well over 100 MB"
    assert abs(while_holding - alone) < _BLOCK_BYTES / 2


_SMAPS = """\
55d0c000-55d0d000 r--p 00000000 fd:01 1234   /usr/bin/python3.11
Rss:                   4 kB
Referenced:            4 kB
Anonymous:             0 kB
7f00a000-7f00e000 rw-p 00000000 00:00 0
Rss:                  16 kB
Referenced:           16 kB
Anonymous:            16 kB
7f10b000-7f11b000 r-xp 00002000 fd:01 5678   /opt/torch/lib/libtorch_cpu.so
Rss:                  64 kB
Referenced:           40 kB
Anonymous:             0 kB
7f11b000-7f11f000 rw-p 00012000 fd:01 5678   /opt/torch/lib/libtorch_cpu.so
Rss:                  16 kB
Referenced:           16 kB
Anonymous:            12 kB
7ffd1000-7ffd3000 rw-p 00000000 00:00 0      [stack]
Rss:                   8 kB
Referenced:            8 kB
"""


def test_referenced_file_bytes_counts_only_file_mappings(tmp_path: Path) -> None:
    smaps = tmp_path / "smaps"
    smaps.write_text(_SMAPS)

    assert referenced_file_bytes(smaps) == (4 + 40 + 16 - 12) * 1024


def test_referenced_file_bytes_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProcessMemoryError, match="cannot read"):
        referenced_file_bytes(tmp_path / "missing")


def test_pages_of_a_file_read_after_clearing_count_as_referenced(tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"\1" * (8 * _MIB))
    with data.open("rb") as handle, mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        assert clear_referenced()
        before = referenced_file_bytes()
        touched = sum(mapped[offset] for offset in range(0, 8 * _MIB, 4096))
        after = referenced_file_bytes()

    assert touched == 8 * _MIB // 4096
    assert after - before >= 8 * _MIB - 64 * 1024


def test_resident_memory_splits_rss_by_kind() -> None:
    now = resident_memory()

    assert now.rss_bytes == now.rss_anon_bytes + now.rss_file_bytes + now.rss_shmem_bytes
    assert now.peak_rss_bytes >= now.rss_bytes
    assert now.peak_private_bytes == now.peak_rss_bytes - now.rss_file_bytes
