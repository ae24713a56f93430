"""The demo's boards: four Raspberry Pi 3 camera boards, each on a pole with its own viewpoint.

A board's cap is this machine's measured runtime baseline of an agent process plus the training
share its real class leaves on arm64: the class's RAM less its OS reserve
(``node_agent.board_classes``) less the agent's runtime measured on the emulated arm64 board
(``ARM64_RUNTIME_BASELINE_BYTES``). The x86-64 runtime here is larger than the board's (a CUDA
build of torch), so the share, not the cap, is what carries over from the board. The caps are
real (a cgroup per agent process); the board's frames come out of the share too.

All four are the smallest board the agent runs on (1 GB): a Raspberry Pi 3 leaves 475 MiB to
training, which holds a checkpointed step of about 200 of the student's frames, a few seconds
of this machine's time. A Raspberry Pi 4 (2 GB) leaves 1.47 GiB: batches of about 600, 18 s a
step here with four boards on two cores, too slow for a demo of minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

from node_agent.board_classes import BoardClass, board_class

ARM64_RUNTIME_BASELINE_BYTES = 330_407_936
"""315.1 MiB: the agent's whole resident set (VmRSS, what the agent plans and guards with) after
its imports and warm-up on an emulated Raspberry Pi 3 (Cortex-A53, torch 2.9.1, 4 threads):
``edgefleet bench board --arch arm64 --cpu cortex-a53 --json``, stored in
``docs/results/board_arm64_baseline.json``."""


@dataclass(frozen=True)
class BoardKind:
    board_class: BoardClass

    @property
    def hardware_class(self) -> str:
        return self.board_class.name

    @property
    def training_bytes(self) -> int:
        """What the board leaves to training above the agent's runtime: RAM − OS reserve −
        the arm64 runtime baseline."""
        return self.board_class.default_budget_bytes - ARM64_RUNTIME_BASELINE_BYTES


RASPBERRY_PI_3 = BoardKind(board_class("raspberry-pi-3"))


@dataclass(frozen=True)
class DemoBoard:
    name: str
    kind: BoardKind
    viewpoint: str
    """A named viewpoint of ``viewpoint.viewpoints``: where this board's camera looks from."""

    def cap_bytes(self, runtime_baseline_bytes: int) -> int:
        return runtime_baseline_bytes + self.kind.training_bytes


BOARDS = (
    DemoBoard("pole-4m", RASPBERRY_PI_3, "pole_4m_30deg"),
    DemoBoard("pole-6m", RASPBERRY_PI_3, "pole_6m_45deg"),
    DemoBoard("pole-8m", RASPBERRY_PI_3, "pole_8m_60deg"),
    DemoBoard("pole-10m", RASPBERRY_PI_3, "pole_10m_75deg"),
)
