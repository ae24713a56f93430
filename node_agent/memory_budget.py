"""The agent's memory budget (whole process), and where it came from.

In order: what the operator set (``--memory-budget``), but never above the cgroup's limit, which
the kernel enforces whatever the operator wrote; else the limit of the cgroup the agent runs in
(a container's, a systemd unit's ``MemoryMax``); else the board class's default, its RAM less
what its OS holds (``board_classes``); else none, and the coordinator takes a share of the RAM
the board reports.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from node_agent.board_classes import BoardClass


class BudgetSource(enum.Enum):
    CONFIGURED = "configured"
    CAPPED_BY_CGROUP = "configured, capped by the cgroup's limit"
    CGROUP = "the cgroup's limit"
    BOARD_CLASS = "the board class's RAM less its OS reserve"
    COORDINATOR = "none here: the coordinator derives it from the RAM"


@dataclass(frozen=True)
class MemoryBudget:
    budget_bytes: int
    """0 with ``BudgetSource.COORDINATOR``."""
    source: BudgetSource


def resolve_budget(
    configured_bytes: int, cgroup_limit_bytes: int | None, board: BoardClass | None
) -> MemoryBudget:
    if configured_bytes < 0:
        raise ValueError(f"memory budget must not be negative, got {configured_bytes}")
    if configured_bytes:
        if cgroup_limit_bytes is not None and configured_bytes > cgroup_limit_bytes:
            return MemoryBudget(cgroup_limit_bytes, BudgetSource.CAPPED_BY_CGROUP)
        return MemoryBudget(configured_bytes, BudgetSource.CONFIGURED)
    if cgroup_limit_bytes is not None:
        return MemoryBudget(cgroup_limit_bytes, BudgetSource.CGROUP)
    if board is not None:
        return MemoryBudget(board.default_budget_bytes, BudgetSource.BOARD_CLASS)
    return MemoryBudget(0, BudgetSource.COORDINATOR)
