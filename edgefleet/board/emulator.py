"""Running a Python program on an emulated arm64 board: the board that scripts/arm64_board.sh
builds, run with QEMU user-mode emulation.

The program runs as the board would run it: the board's own python3.11, C libraries and torch
(PyPI's aarch64 wheels) on an emulated Cortex-A53 (Raspberry Pi 3) or Cortex-A72 (Pi 4). The
edgefleet source is not in the board: it comes from this checkout, on ``PYTHONPATH`` after the
board's packages (qemu-user's ``-L`` serves the userland's files and falls back to the host's
for any other path). The environment is the board's, not this process's: a host variable
(a virtual environment's ``PYTHONPATH``, say) would let x86 packages into the guest.

Emulation is 15-100x slower than the board: use it for what runs and what memory it takes.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CPUS = {"cortex-a53": "Raspberry Pi 3", "cortex-a72": "Raspberry Pi 4"}
"""The cores emulated, by qemu's name: the boards' own (ARMv8.0, no LSE atomics)."""
DEFAULT_CPU = "cortex-a53"
BOARD_THREADS = 4
"""Both Pis have four cores; torch's own choice under emulation would be the host's count."""
BUILD_SCRIPT = "scripts/arm64_board.sh"
_STAMP = "board.stamp"
_GUEST_PYTHON = "usr/bin/python3.11"
_SITE_PACKAGES = "opt/edgefleet/site-packages"
_STDERR_TAIL_CHARS = 3000
_REPOSITORY = Path(__file__).resolve().parents[2]
"""The checkout this module runs from: the guest imports edgefleet, node_agent... from it."""


class BoardError(RuntimeError):
    """The board cannot run the program; the message says why and what to do."""


def default_board_dir() -> Path:
    """``$EDGEFLEET_ARM64_DIR``, else ``~/.cache/edgefleet/arm64`` (the build script's)."""
    configured = os.environ.get("EDGEFLEET_ARM64_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "edgefleet" / "arm64"


@dataclass(frozen=True)
class Board:
    """A board directory that the build script completed (its stamp is written last)."""

    directory: Path

    def __post_init__(self) -> None:
        if not (self.directory / _STAMP).is_file():
            raise BoardError(
                f"no complete arm64 board in {self.directory}: run {BUILD_SCRIPT} "
                f"{self.directory} first (a few minutes; it needs apt-get and PyPI)"
            )

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs"

    @property
    def python(self) -> Path:
        return self.rootfs / _GUEST_PYTHON

    @property
    def site_packages(self) -> Path:
        return self.rootfs / _SITE_PACKAGES


@dataclass(frozen=True)
class Emulation:
    """How a guest program runs: which core, how many threads, for how long at most."""

    cpu: str = DEFAULT_CPU
    threads: int = BOARD_THREADS
    timeout_s: float = 900.0
    preload: Path | None = None
    """A guest (aarch64) library preloaded into the program only, never into qemu: the
    plan-aware arena built for the board (``node_agent.arena.build_arena`` with a cross
    compiler)."""

    def __post_init__(self) -> None:
        if self.cpu not in CPUS:
            raise ValueError(f"cpu must be one of {', '.join(CPUS)}, got {self.cpu!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")


def qemu_binary() -> str:
    """The host's qemu-aarch64 (qemu-user); ``BoardError`` saying how to get it if absent."""
    found = shutil.which("qemu-aarch64")
    if found is None:
        raise BoardError(
            f"qemu-aarch64 is not installed: {BUILD_SCRIPT} installs it, or "
            "`apt-get install qemu-user` (Debian bookworm's qemu 7.2)"
        )
    return found


def qemu_version(qemu: str) -> str:
    """The first line of ``qemu-aarch64 --version``."""
    completed = subprocess.run(
        [qemu, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return completed.stdout.splitlines()[0] if completed.stdout else "unknown"


def guest_command(
    board: Board, emulation: Emulation, qemu: str, arguments: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """The host command line and environment that run ``python3.11 ARGUMENTS`` on the board."""
    preload = ["-E", f"LD_PRELOAD={emulation.preload}"] if emulation.preload else []
    command = [qemu, "-L", str(board.rootfs), *preload, str(board.python), "-s", *arguments]
    nice = shutil.which("nice")
    # Emulated runs take minutes of CPU: the host's other work comes first.
    if nice is not None:
        command = [nice, "-n", "19", *command]
    threads = str(emulation.threads)
    environment = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
        "LANG": "C.UTF-8",
        "QEMU_CPU": emulation.cpu,
        "PYTHONPATH": os.pathsep.join([str(board.site_packages), str(_REPOSITORY)]),
        "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": threads,
    }
    return command, environment


def _no_core_dumps() -> None:
    # qemu writes the guest's core file into the working directory when a guest signal kills it.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_guest(board: Board, emulation: Emulation, arguments: Sequence[str]) -> str:
    """Run ``python3.11 ARGUMENTS`` on the board; its stdout, or ``BoardError`` with the guest's
    error output when it fails (a signal named: SIGILL is an instruction the core lacks)."""
    command, environment = guest_command(board, emulation, qemu_binary(), arguments)
    try:
        completed = subprocess.run(
            command,
            env=environment,
            capture_output=True,
            text=True,
            timeout=emulation.timeout_s,
            check=False,
            preexec_fn=_no_core_dumps,
        )
    except subprocess.TimeoutExpired as expired:
        raise BoardError(
            f"the guest ran past {emulation.timeout_s:g} s on an emulated {emulation.cpu} "
            "(emulation is 15-100x slower than the board; a busy host slower still)"
        ) from expired
    if completed.returncode == 0:
        return completed.stdout
    tail = completed.stderr.strip()[-_STDERR_TAIL_CHARS:]
    if completed.returncode < 0:
        killer = signal.Signals(-completed.returncode)
        why = f"the guest was killed by {killer.name}"
        if killer is signal.SIGILL:
            why += f" (an illegal instruction: the build uses an instruction {emulation.cpu} lacks)"
    else:
        why = f"the guest exited with status {completed.returncode}"
    raise BoardError(f"{why} on an emulated {emulation.cpu}; its error output ends:\n{tail}")
