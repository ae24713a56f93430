"""The agent's runtime baseline on an emulated arm64 board (``edgefleet bench board``).

The guest program (``runtime_probe``) imports the agent, warms its runtime up and measures it.
The figures reported at the top level are the guest's own, what a real board would hold:

- ``rss_anon_bytes``: the anonymous memory of the guest's mappings (smaps ``Anonymous``);
- ``rss_file_bytes``: the rest of their resident pages (code and data files, mapped);
- ``file_allowance_bytes``: the file pages of the guest's mappings the warm-up used, as the
  agent's ``measure_runtime`` counts them (smaps ``Referenced`` after ``clear_refs``);
- ``runtime_baseline_bytes``: anonymous plus the allowance, the agent's own accounting.

``qemu`` holds the same figures as the host kernel counts the process (``/proc/self/status``,
and ``measure_runtime``'s own results), qemu's translation cache and heap included: what
measuring under emulation would report without the guest's view.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from edgefleet.board.emulator import (
    Board,
    BoardError,
    Emulation,
    qemu_binary,
    qemu_version,
    run_guest,
)
from edgefleet.board.guest_memory import GuestMemory

ARCH = "arm64"
_PROBE = "edgefleet.board.runtime_probe"


@dataclass(frozen=True)
class QemuView:
    """The host's figures for the emulated process: the guest's memory and qemu's together."""

    rss_bytes: int
    rss_anon_bytes: int
    rss_file_bytes: int
    runtime_baseline_bytes: int
    """``measure_runtime``'s baseline, from status and the whole process's smaps."""
    file_allowance_bytes: int

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) < 0:
                raise ValueError(f"{field.name} must not be negative")


@dataclass(frozen=True)
class BoardBaseline:
    """The agent's warmed runtime on an emulated board: the guest's own memory at the top."""

    arch: str
    cpu: str
    threads: int
    torch_version: str
    runtime_baseline_bytes: int
    rss_bytes: int
    rss_anon_bytes: int
    rss_file_bytes: int
    file_allowance_bytes: int
    import_s: float
    """``import node_agent.agent`` (torch with it), emulated: seconds on this host, not a Pi's."""
    warm_up_s: float
    qemu_version: str
    qemu: QemuView

    def __post_init__(self) -> None:
        if self.rss_anon_bytes + self.rss_file_bytes != self.rss_bytes:
            raise ValueError("rss_anon_bytes and rss_file_bytes must add up to rss_bytes")
        if self.runtime_baseline_bytes != self.rss_anon_bytes + self.file_allowance_bytes:
            raise ValueError("runtime_baseline_bytes must be anonymous bytes plus the allowance")
        if self.rss_anon_bytes <= 0:
            # qemu 8 and later emulate smaps too, and report every mapping's Rss as 0.
            raise ValueError(
                f"the guest's mappings show no resident memory under {self.qemu_version}: "
                "guest memory is read with qemu 7.2 (Debian bookworm's qemu-user)"
            )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def baseline_from_probe(
    payload: dict[str, object], emulation: Emulation, version: str
) -> BoardBaseline:
    """The result from the probe's JSON: the guest's figures at the top, the host's in ``qemu``."""
    guest_fields = payload["guest"]
    runtime = payload["runtime"]
    assert isinstance(guest_fields, dict) and isinstance(runtime, dict)
    guest = GuestMemory(**guest_fields)
    return BoardBaseline(
        arch=ARCH,
        cpu=emulation.cpu,
        threads=int(str(payload["threads"])),
        torch_version=str(payload["torch_version"]),
        runtime_baseline_bytes=guest.guest_anon_bytes + guest.guest_referenced_file_bytes,
        rss_bytes=guest.guest_rss_bytes,
        rss_anon_bytes=guest.guest_anon_bytes,
        rss_file_bytes=guest.guest_file_bytes,
        file_allowance_bytes=guest.guest_referenced_file_bytes,
        import_s=float(str(payload["import_s"])),
        warm_up_s=float(str(payload["warm_up_s"])),
        qemu_version=version,
        qemu=QemuView(
            rss_bytes=guest.status_rss_bytes,
            rss_anon_bytes=guest.status_anon_bytes,
            rss_file_bytes=guest.status_file_bytes,
            runtime_baseline_bytes=int(runtime["runtime_baseline_bytes"]),
            file_allowance_bytes=int(runtime["file_allowance_bytes"]),
        ),
    )


def measure_board_baseline(board: Board, emulation: Emulation) -> BoardBaseline:
    """Run the probe on the board; ``BoardError`` if the guest fails or says something else."""
    version = qemu_version(qemu_binary())
    stdout = run_guest(board, emulation, ["-m", _PROBE, "--threads", str(emulation.threads)])
    lines = stdout.strip().splitlines()
    try:
        payload = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as error:
        raise BoardError(
            f"the guest's output is not the probe's JSON ({error}); it ends:\n{stdout[-2000:]}"
        ) from error
    if not isinstance(payload, dict) or payload.get("machine") != "aarch64":
        raise BoardError(f"the guest did not run as aarch64: {lines[-1][:200]}")
    try:
        return baseline_from_probe(payload, emulation, version)
    except (KeyError, TypeError, ValueError) as error:
        raise BoardError(f"the guest's figures do not hold together: {error}") from error
