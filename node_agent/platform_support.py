"""Whether this board's CPU can run the installed torch, decided before torch is imported.

A torch that the CPU cannot run does not fail politely: on a Raspberry Pi 3 or 4 (Cortex-A53,
Cortex-A72: ARMv8.0, without the LSE atomic instructions) torch 2.10 dies with SIGILL while it
is imported (its mimalloc uses LSE; pytorch/pytorch#174344) and torch 2.11 and later, CUDA
builds on aarch64, die with SIGILL in their first multi-threaded matrix product (their BLAS,
nvpl, uses LSE). Measured under emulation of those cores: ``../shared/BOARDS.md`` in the
project's notes, ``docs/agent.md`` here. torch 2.9.1's CPU build with torchvision 0.24.1 is the
newest PyPI pair that runs there, and the ``agent`` extra pins it on aarch64.

32-bit ARM (the ODROID XU4's armv7l) has no PyTorch wheel on PyPI for any version and no
Debian package, so the agent refuses it by name instead of failing to import.

Nothing here imports torch: the point is to speak before a process that would crash starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import re
import signal
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

SUPPORTED_ARCHITECTURES = ("x86_64", "aarch64")
THIRTY_TWO_BIT_ARM = ("armv6l", "armv7l", "armv8l", "armhf", "arm")
NEWEST_TORCH_WITHOUT_LSE = (2, 9)
"""The last torch minor release whose aarch64 wheel runs on ARMv8.0 cores."""
BOARD_TORCH = "torch 2.9.1 (CPU build) with torchvision 0.24.1"

_AT_HWCAP = 16
_HWCAP_ATOMICS = 1 << 8
"""aarch64 ``HWCAP_ATOMICS``: the CPU has the ARMv8.1 LSE atomic instructions."""
_CPUINFO = Path("/proc/cpuinfo")
_VERSION = re.compile(r"^(\d+)\.(\d+)")


class UnsupportedPlatform(RuntimeError):
    """This board cannot run the agent as installed; the message says what would."""


@dataclass(frozen=True)
class Platform:
    arch: str
    torch_version: str
    """The installed distribution's version, e.g. ``2.9.1`` or ``2.14.1+cu130``; "" if none."""
    has_lse_atomics: bool
    """Meaningful on aarch64 only."""


def installed_torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return ""


def aarch64_has_lse_atomics(cpuinfo: Path = _CPUINFO) -> bool:
    """The kernel's hardware capabilities for this process (what the CPU offers, also under
    emulation), else the ``Features`` line of ``/proc/cpuinfo``."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None:
        getauxval = getattr(ctypes.CDLL(libc_name), "getauxval", None)
        if getauxval is not None:
            getauxval.restype = ctypes.c_ulong
            getauxval.argtypes = [ctypes.c_ulong]
            hwcap = int(getauxval(_AT_HWCAP))
            if hwcap:
                return bool(hwcap & _HWCAP_ATOMICS)
    return cpuinfo_lists_atomics(cpuinfo)


def cpuinfo_lists_atomics(cpuinfo: Path = _CPUINFO) -> bool:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Features":
            return "atomics" in value.split()
    return False


def this_platform() -> Platform:
    arch = platform.machine()
    return Platform(
        arch=arch,
        torch_version=installed_torch_version(),
        has_lse_atomics=arch == "aarch64" and aarch64_has_lse_atomics(),
    )


def check(board: Platform) -> None:
    """``UnsupportedPlatform`` naming the supported CPUs and torch builds, unless ``board`` can
    run the agent."""
    supported = (
        f"the agent runs on {' and '.join(SUPPORTED_ARCHITECTURES)} "
        f"(on Raspberry Pi 3/4 and other ARMv8.0 cores with {BOARD_TORCH})"
    )
    if board.arch in THIRTY_TWO_BIT_ARM:
        raise UnsupportedPlatform(
            f"this is 32-bit ARM ({board.arch}): PyTorch publishes no wheel for it and Debian "
            f"no package, so the agent cannot train here; {supported}. A 32-bit board could "
            "only join with a torch built from source, which edgefleet does not provide."
        )
    if board.arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedPlatform(f"unsupported architecture {board.arch!r}: {supported}")
    if not board.torch_version:
        raise UnsupportedPlatform(
            "torch is not installed: `pip install 'edgefleet[agent]'` installs the build for "
            f"this board; {supported}"
        )
    if board.arch == "aarch64" and not board.has_lse_atomics:
        matched = _VERSION.match(board.torch_version)
        if matched is None or (int(matched[1]), int(matched[2])) > NEWEST_TORCH_WITHOUT_LSE:
            raise UnsupportedPlatform(
                f"torch {board.torch_version} does not run on this CPU: it has no LSE atomic "
                "instructions (ARMv8.0, e.g. Cortex-A53 on a Raspberry Pi 3, Cortex-A72 on a "
                "Pi 4, Cortex-A57 on a Jetson Nano), which torch 2.10 and later use, and would "
                f"die with SIGILL. Install {BOARD_TORCH}: `pip install 'edgefleet[agent]'` "
                "pins them on aarch64."
            )


def check_this_board() -> Platform:
    board = this_platform()
    check(board)
    return board


# A child does what crashed on Pi cores: import torch, a multi-threaded matrix product and a
# backward pass; so does every real step, so a child that survives this has shown the build runs.
_PROBE_CODE = (
    "import torch\n"
    "torch.set_num_threads(max(2, torch.get_num_threads()))\n"
    "a = torch.rand(256, 256, requires_grad=True)\n"
    "(a @ a).relu().sum().backward()\n"
    "print(torch.__version__)\n"
)


def probe_torch(python: str, timeout_s: float) -> str:
    """Run torch in a child interpreter; its version, or ``UnsupportedPlatform`` saying how the
    child died (a SIGILL named as an instruction this CPU lacks)."""
    completed = subprocess.run(
        [python, "-c", _PROBE_CODE],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if completed.returncode == 0:
        return completed.stdout.strip().splitlines()[-1]
    if completed.returncode == -signal.SIGILL:
        raise UnsupportedPlatform(
            "torch died with SIGILL (an instruction this CPU does not have) when it ran a "
            f"matrix product: this torch build does not run on this CPU; on ARMv8.0 boards "
            f"(Raspberry Pi 3/4, Jetson Nano) install {BOARD_TORCH}"
        )
    if completed.returncode < 0:
        how = f"was killed by {signal.Signals(-completed.returncode).name}"
    else:
        how = f"exited with status {completed.returncode}"
    raise UnsupportedPlatform(
        f"torch does not run here: a child importing it {how}: {completed.stderr.strip()[-1000:]}"
    )
