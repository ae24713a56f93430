"""The boards edgefleet is for, as they are sold: RAM, CPU, the torch that runs there, and what
their operating system leaves to the agent.

A class's default memory budget (the agent's, whole process) is its RAM less the OS reserve:
the memory that the kernel, the firmware's carve-outs and a headless board's services hold
before the agent starts. The reserve of the kernel and the services was measured by booting a
minimal Debian arm64 system under full-system emulation (``scripts/arm64_os_reserve.sh``,
``docs/benchmarks.md``); the firmware carve-outs are the vendors' documented defaults.

The agent recognises its board from the device tree's model string (the same text the vendor
prints on the board's documentation: ``/proc/device-tree/model``), so a Raspberry Pi 3 registers
as ``raspberry-pi-3`` without an operator naming it. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
GIB = 1 << 30

_DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


@dataclass(frozen=True)
class BoardClass:
    name: str
    """The hardware class the board registers as (the coordinator's memory models are kept per
    class)."""
    board: str
    """The product, as its vendor names it."""
    model_prefix: str
    """The start of the board's ``/proc/device-tree/model``."""
    ram_bytes: int
    cpu: str
    arch: str
    """``uname -m`` under the OS the agent runs on (a 64-bit OS for the Raspberry Pis)."""
    torch: str
    """The torch build that runs on this CPU; "" where none does."""
    os_reserve_bytes: int
    """RAM the OS holds before the agent starts: kernel and services (measured) plus firmware
    carve-outs (documented)."""
    note: str = ""

    def __post_init__(self) -> None:
        assert 0 < self.os_reserve_bytes < self.ram_bytes, self.name

    @property
    def supported(self) -> bool:
        return bool(self.torch)

    @property
    def default_budget_bytes(self) -> int:
        """The agent's whole-process budget when nothing else says: RAM less the OS reserve."""
        return self.ram_bytes - self.os_reserve_bytes


def reserve_bytes(kernel_and_services_bytes: int, firmware_bytes: int) -> int:
    return kernel_and_services_bytes + firmware_bytes


_BOARD_TORCH = "2.9.1 (CPU build), torchvision 0.24.1"
# RAM less MemAvailable once a minimal headless Debian bookworm arm64 system (systemd, journald,
# udevd, logind, DHCP, sshd, cron, timesyncd) has booted and settled, under full-system emulation
# (scripts/arm64_os_reserve.sh, docs/results/arm64_os_reserve.json). The 1 GiB figure was taken
# with the 948 MiB a Pi 3 leaves Linux after VideoCore's share; the 4 GiB one includes what the
# kernel sets aside when RAM crosses the 4 GiB physical boundary (a 64 MiB bounce buffer, a
# second zone's watermarks). Camera services and page-cache pressure are not in them.
_KERNEL_AND_SERVICES_1GIB = 165_281_792
_KERNEL_AND_SERVICES_2GIB = 193_314_816
_KERNEL_AND_SERVICES_4GIB = 346_390_528
_VIDEOCORE_BYTES = 76 * MIB
"""``gpu_mem``'s documented default on Raspberry Pi OS: RAM the firmware keeps from Linux."""

BOARD_CLASSES = (
    BoardClass(
        name="raspberry-pi-3",
        board="Raspberry Pi 3 Model B",
        model_prefix="Raspberry Pi 3 Model B",
        ram_bytes=1 * GIB,
        cpu="4x Cortex-A53 1.2 GHz (ARMv8.0)",
        arch="aarch64",
        torch=_BOARD_TORCH,
        os_reserve_bytes=reserve_bytes(_KERNEL_AND_SERVICES_1GIB, _VIDEOCORE_BYTES),
        note="64-bit Raspberry Pi OS; no LSE atomics: torch 2.10 and later die with SIGILL",
    ),
    BoardClass(
        name="raspberry-pi-4-2gb",
        board="Raspberry Pi 4 Model B (2 GB)",
        model_prefix="Raspberry Pi 4 Model B",
        ram_bytes=2 * GIB,
        cpu="4x Cortex-A72 1.5 GHz (ARMv8.0)",
        arch="aarch64",
        torch=_BOARD_TORCH,
        os_reserve_bytes=reserve_bytes(_KERNEL_AND_SERVICES_2GIB, _VIDEOCORE_BYTES),
        note="64-bit Raspberry Pi OS; no LSE atomics",
    ),
    BoardClass(
        name="raspberry-pi-4-4gb",
        board="Raspberry Pi 4 Model B (4 GB)",
        model_prefix="Raspberry Pi 4 Model B",
        ram_bytes=4 * GIB,
        cpu="4x Cortex-A72 1.5 GHz (ARMv8.0)",
        arch="aarch64",
        torch=_BOARD_TORCH,
        os_reserve_bytes=reserve_bytes(_KERNEL_AND_SERVICES_4GIB, _VIDEOCORE_BYTES),
        note="64-bit Raspberry Pi OS; no LSE atomics",
    ),
    BoardClass(
        name="jetson-nano",
        board="NVIDIA Jetson Nano Developer Kit (4 GB)",
        model_prefix="NVIDIA Jetson Nano",
        ram_bytes=4 * GIB,
        cpu="4x Cortex-A57 1.43 GHz (ARMv8.0)",
        arch="aarch64",
        torch=_BOARD_TORCH,
        # The GPU shares the RAM; the agent trains on the CPU (PyPI's aarch64 torch has no CUDA
        # for this board's Maxwell GPU and JetPack 4). L4T's carve-outs are not modelled.
        os_reserve_bytes=reserve_bytes(_KERNEL_AND_SERVICES_4GIB, 0),
        note="CPU training; no LSE atomics",
    ),
    BoardClass(
        name="odroid-xu4",
        board="ODROID-XU4 (Array of Things' Waggle payload computer)",
        model_prefix="Hardkernel Odroid XU4",
        ram_bytes=2 * GIB,
        cpu="4x Cortex-A15 2 GHz + 4x Cortex-A7 1.4 GHz (ARMv7)",
        arch="armv7l",
        torch="",
        # Not measured for armv7 (no agent runs there): the arm64 figure stands in.
        os_reserve_bytes=reserve_bytes(_KERNEL_AND_SERVICES_2GIB, 0),
        note="32-bit ARM: no PyTorch wheel for any version, no Debian package; a torch built "
        "from source could join, which edgefleet does not provide",
    ),
)


class UnknownBoardClass(ValueError):
    """A class name that is none of ``BOARD_CLASSES``."""


def board_class(name: str) -> BoardClass:
    for known in BOARD_CLASSES:
        if known.name == name:
            return known
    names = ", ".join(known.name for known in BOARD_CLASSES)
    raise UnknownBoardClass(f"unknown board class {name!r}; known: {names}")


def recognise(model: str, ram_bytes: int) -> BoardClass | None:
    """The class of a board whose device tree names it ``model`` and whose kernel reports
    ``ram_bytes`` (``MemTotal``: a little under the nominal RAM); None if unknown."""
    candidates = [known for known in BOARD_CLASSES if model.startswith(known.model_prefix)]
    if not candidates:
        return None
    # Variants of one board differ only in RAM: the nominal size nearest to MemTotal.
    return min(candidates, key=lambda known: abs(known.ram_bytes - ram_bytes))


def device_tree_model(path: Path = _DEVICE_TREE_MODEL) -> str:
    try:
        return path.read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip()
    except OSError:
        return ""
