"""Capped exponential backoff with jitter, for an agent waiting out its coordinator.

Each wait is drawn between half and all of the capped exponential, so a fleet that lost its
coordinator at the same moment does not reconnect in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base_s: float = 0.5
    cap_s: float = 30.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got {self.base_s} and {self.cap_s}")

    def next_wait_s(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2.0**self.attempts)
        self.attempts += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0
