"""Training jobs run on the emulated board under a real memory cap (``edgefleet.harness.hardcap``).

``run_capped`` starts ``PYTHON -m edgefleet.harness.train_child JOB RESULT`` inside a fresh memory
cgroup. Here ``PYTHON`` is a wrapper script that ``exec``s qemu-aarch64 with the board's
python3.11, its packages and the board's environment (``emulator.guest_command``): qemu and the
arm64 program are one host process, so the cgroup charges both, and the OOM killer ends the run
when the two together pass the limit. The wrapper also asks ``train_child`` for the guest's own
figures (``guest_sampler``: the guest's baseline and sampled peak, qemu's share) and names a
file where the sampler keeps its running peak, which a killed run leaves behind.

The process is set up as the agent's is (``Allocator.AGENT``): the wrapper runs
``edgefleet.allocators.child`` in place of ``edgefleet.harness.train_child``, which fixes glibc's
mmap threshold after its imports and runs the agent's warm-up step (``node_agent.runtime``) before
handing the job to ``train_child``. The allocator decides how much a recomputing plan holds beyond
its tensors, so a plan measured in any other process would be planned for another process than the
one that trains. ``Allocator.GLIBC_DEFAULT`` keeps the first runs' process: ``train_child`` alone,
glibc's defaults, no warm-up.
"""

from __future__ import annotations

import json
import shlex
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from edgefleet.allocators.candidates import AGENT_FIX_ENV
from edgefleet.board.emulator import Board, Emulation, guest_command, qemu_binary
from edgefleet.board.guest_sampler import PEAK_FILE_ENV, SAMPLE_ENV, GuestPeak
from edgefleet.harness.hardcap import CappedRun, TrainJob, run_capped

SAMPLE_INTERVAL_S = 1.0
"""Reading the guest's memory takes a fraction of a second emulated; a step takes minutes."""
TRAIN_CHILD_MODULE = "edgefleet.harness.train_child"
"""What ``run_capped`` asks its python to run."""
AGENT_CHILD_MODULE = "edgefleet.allocators.child"
WRAPPER_EXIT_BAD_ARGUMENTS = 64
"""The wrapper was asked to run something other than the training child (EX_USAGE)."""


class Allocator(StrEnum):
    """How the training child's process is set up."""

    AGENT = "agent"
    """The agent's: mmap threshold fixed at 128 KiB after the imports, one warm-up step."""
    GLIBC_DEFAULT = "glibc-default"
    """glibc's malloc as it starts, no warm-up: the process of the scenario's first runs."""


@dataclass(frozen=True)
class GuestRun:
    """A capped run on the board: ``run_capped``'s result and the guest's own figures."""

    run: CappedRun
    guest: GuestPeak | None
    """From the child's result, or (a killed child) the sampler's last published figures."""

    @property
    def overhead_bytes(self) -> int | None:
        """What the guest held at its peak beyond its baseline and its live tensors."""
        if self.guest is None or self.run.result is None:
            return None
        live = self.run.result.get("live_tensor_peak_bytes")
        if not isinstance(live, int):
            return None
        return self.guest.peak_rss_bytes - (self.guest.baseline_rss_bytes + live)

    @property
    def agent_fix_applied(self) -> bool | None:
        """Whether the child's ``mallopt`` took (``edgefleet.allocators.child`` reports it);
        None where the child ran without that module or wrote no result."""
        facts = None if self.run.result is None else self.run.result.get("allocator")
        applied = facts.get("agent_fix_applied") if isinstance(facts, dict) else None
        return applied if isinstance(applied, bool) else None


def wrapper_script(
    board: Board,
    emulation: Emulation,
    qemu: str,
    peak_file: Path,
    interval_s: float,
    allocator: Allocator = Allocator.AGENT,
) -> str:
    """The ``/bin/sh`` script that runs ``python3.11 "$@"`` on the board, sampled; under
    ``Allocator.AGENT``, ``-m edgefleet.harness.train_child ARGS`` becomes the agent's process
    (``-m edgefleet.allocators.child ARGS`` with the fix asked for), and anything else is
    refused rather than run in another process than the one asked for."""
    command, environment = guest_command(board, emulation, qemu, [])
    environment = {
        **environment,
        SAMPLE_ENV: f"{interval_s:g}",
        PEAK_FILE_ENV: str(peak_file),
    }
    if allocator is Allocator.GLIBC_DEFAULT:
        arguments = '"$@"'
        check = ""
    else:
        environment[AGENT_FIX_ENV] = "1"
        arguments = f'-m {AGENT_CHILD_MODULE} "$@"'
        check = (
            f'[ "$1" = -m ] && [ "$2" = {TRAIN_CHILD_MODULE} ] || '
            f'{{ echo "board python: expected -m {TRAIN_CHILD_MODULE}, got: $*" >&2; '
            f"exit {WRAPPER_EXIT_BAD_ARGUMENTS}; }}\nshift 2\n"
        )
    # env -i: nothing of the host's environment (run_capped adds this checkout to PYTHONPATH,
    # a venv's variables, a MALLOC_ setting) reaches the guest; the board's own replaces it.
    assignments = " ".join(shlex.quote(f"{key}={value}") for key, value in environment.items())
    return f"#!/bin/sh\n{check}exec env -i {assignments} {shlex.join(command)} {arguments}\n"


def run_on_board(
    board: Board,
    emulation: Emulation,
    job: TrainJob,
    limit_bytes: int,
    work_dir: Path,
    *,
    allocator: Allocator = Allocator.AGENT,
    interval_s: float = SAMPLE_INTERVAL_S,
) -> GuestRun:
    """Train ``job`` on the board in a cgroup of ``limit_bytes`` in the process ``allocator``
    names (``run_capped``'s errors)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    peak_file = work_dir / "guest-peak.json"
    peak_file.unlink(missing_ok=True)
    wrapper = work_dir / "board-python"
    wrapper.write_text(
        wrapper_script(board, emulation, qemu_binary(), peak_file, interval_s, allocator)
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    run = run_capped(job, limit_bytes, emulation.timeout_s, python=str(wrapper))
    return GuestRun(run, guest_peak_of(run.result, peak_file))


def guest_peak_of(result: dict[str, Any] | None, peak_file: Path) -> GuestPeak | None:
    """The guest's figures from the child's result, else from the sampler's file, else None."""
    source: object = None if result is None else result.get("guest")
    if source is None:
        try:
            source = json.loads(peak_file.read_text())
        except (OSError, json.JSONDecodeError):
            return None
    if not isinstance(source, dict):
        return None
    try:
        return GuestPeak(**source)
    except (TypeError, ValueError):
        return None
