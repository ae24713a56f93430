"""What every handler works on: the registry, the model store, the event log, the metrics.

One coordinator process serves a registry. ``round_lock`` orders the two things that must not
interleave: accepting an update into an open round, and closing that round. Without it an update
could be acknowledged after the round's updates were gathered for aggregation, and an
acknowledged update must always count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from orchestrator.config import CoordinatorConfig
from orchestrator.events import EventLog
from orchestrator.metrics import FleetMetrics
from orchestrator.storage import Storage
from orchestrator.storage.model_store import ModelStore


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FleetState:
    storage: Storage
    config: CoordinatorConfig
    model_store: ModelStore = field(init=False)
    events: EventLog = field(init=False)
    metrics: FleetMetrics = field(init=False)
    round_lock: threading.RLock = field(init=False, default_factory=threading.RLock)
    wake: threading.Event = field(init=False, default_factory=threading.Event)
    """Set to have the conductor look at the jobs now rather than at its next tick."""
    clock: Callable[[], datetime] = utc_now

    def __post_init__(self) -> None:
        self.model_store = ModelStore(self.config.model_store_dir, fsync=self.config.fsync)
        self.events = EventLog(self.storage)
        self.metrics = FleetMetrics(self.storage, self.config.heartbeat_timeout_s)
