"""The agent's configuration: one typed, validated dataclass (`edgefleet agent run` fills it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from node_agent.client import TlsFiles

_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9._-]+):\d{1,5}$")


@dataclass(frozen=True)
class AgentConfig:
    coordinator: str
    """``HOST:PORT`` the agent dials (boards sit behind NAT: they always call out)."""
    enrollment_token: str
    data_dir: Path
    """Identity, outbox of unsent updates, and by default the frames and weights folders."""
    memory_budget_bytes: int = 0
    """The RAM this agent may use, whole process; 0: the coordinator derives it from the RAM."""
    frames_dir: Path | None = None
    """The board's own frames (JPEG/PNG); default ``<data dir>/frames``."""
    weights_dir: Path | None = None
    """Local model weights (``<model>.safetensors`` or ``.pth``); default ``<data dir>/weights``."""
    hardware_class: str = ""
    name: str = ""
    tls: TlsFiles | None = None
    memory_margin: float = 0.03
    """A training pass whose peak comes within this fraction of the training share (the budget
    above the runtime baseline) of the budget ends the task; less than the planner's margin."""
    backoff_cap_s: float = 30.0
    threads: int = 0
    """torch's intra-op threads; 0: the cores this process may use. Boards sharing one machine
    (a simulation, the demo) take one each: spinning OpenMP threads on oversubscribed cores make
    training tens of times slower."""

    def __post_init__(self) -> None:
        if not _ADDRESS.match(self.coordinator):
            raise ValueError(f"coordinator must be HOST:PORT, got {self.coordinator!r}")
        if not self.enrollment_token:
            raise ValueError("an enrollment token is required")
        if self.memory_budget_bytes < 0:
            raise ValueError(f"memory budget must not be negative, got {self.memory_budget_bytes}")
        if not 0 <= self.memory_margin < 0.5:
            raise ValueError(f"memory margin must be in [0, 0.5), got {self.memory_margin}")
        if self.threads < 0:
            raise ValueError(f"threads must not be negative, got {self.threads}")
        if not self.backoff_cap_s > 0:
            raise ValueError(f"backoff cap must be positive, got {self.backoff_cap_s}")
        if self.tls is not None:
            for path in (self.tls.ca, self.tls.cert, self.tls.key):
                if path is not None and not path.is_file():
                    raise ValueError(f"no such file {path}")
            if (self.tls.cert is None) != (self.tls.key is None):
                raise ValueError("a client certificate and its key go together")

    @property
    def frames(self) -> Path:
        return self.frames_dir or self.data_dir / "frames"

    @property
    def weights(self) -> Path:
        return self.weights_dir or self.data_dir / "weights"
