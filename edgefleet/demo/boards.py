"""The demo's boards: two kinds of camera board, each on a pole with its own viewpoint.

A board's memory cap is this machine's measured runtime baseline of an agent process plus what
such a board leaves to training once its OS and camera services run: a 1 GB Raspberry Pi 3
leaves little, a 2 GB ODROID XU4 more. The caps are real (a cgroup per agent process).

The shares are this demo's scenario, chosen so that the plans differ: the board's frames come
out of the share too (2,000 frames of 64 px hold 25 MB), and at 96 MiB store-all reaches batch
25 where checkpointing reaches 31; at 128 MiB, 37 and 45 (``edgefleet demo`` prints the plans).
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class BoardKind:
    hardware_class: str
    ram_label: str
    training_bytes: int
    """What the board leaves to training above the agent's runtime baseline."""


RASPBERRY_PI_3 = BoardKind("raspberry-pi-3", "1 GB", 96 * MIB)
ODROID_XU4 = BoardKind("odroid-xu4", "2 GB", 128 * MIB)


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
    DemoBoard("pole-8m", ODROID_XU4, "pole_8m_60deg"),
    DemoBoard("pole-10m", ODROID_XU4, "pole_10m_75deg"),
)
