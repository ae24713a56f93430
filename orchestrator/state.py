"""What every handler works on: the registry, the model store, the event log, the metrics.

One coordinator process serves a registry. ``round_lock`` orders the two things that must not
interleave: accepting an update into an open round (and folding it into the round's running
sum, ``sums``), and closing that round. Without it an update could be acknowledged after the
round's updates were gathered for aggregation, and an acknowledged update must always count.
The fleet service's in-memory caches of the registry (``hot_paths``) live here too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from orchestrator.aggregation import RoundSums
from orchestrator.config import CoordinatorConfig
from orchestrator.events import EventLog
from orchestrator.hot_paths import CredentialCache, IdleIndex, SeenBuffer
from orchestrator.metrics import FleetMetrics
from orchestrator.storage import Storage
from orchestrator.storage.model_store import ModelStore

CREDENTIAL_TTL_S = 60.0
"""How long a checked node credential is trusted without reading the registry again."""
SEEN_FLUSH_S = 2.0
"""How often buffered heartbeats are written (far below any liveness timeout)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FleetState:
    storage: Storage
    config: CoordinatorConfig
    model_store: ModelStore = field(init=False)
    events: EventLog = field(init=False)
    metrics: FleetMetrics = field(init=False)
    upload_slots: threading.BoundedSemaphore = field(init=False)
    """Held while an update is received and checked (``config.upload_concurrency`` of them)."""
    upload_admission: threading.BoundedSemaphore = field(init=False)
    """Held by every upload in progress, waiting for a slot or not (``config.upload_threads``)."""
    round_lock: threading.RLock = field(init=False, default_factory=threading.RLock)
    wake: threading.Event = field(init=False, default_factory=threading.Event)
    """Set to have the conductor look at the jobs now rather than at its next tick."""
    sums: RoundSums = field(init=False, default_factory=RoundSums)
    credentials: CredentialCache = field(
        init=False, default_factory=lambda: CredentialCache(CREDENTIAL_TTL_S)
    )
    seen: SeenBuffer = field(init=False, default_factory=lambda: SeenBuffer(SEEN_FLUSH_S))
    idle_pulls: IdleIndex = field(init=False, default_factory=IdleIndex)
    """Boards with no task to pull (no open assignment, no profile task)."""
    idle_beats: IdleIndex = field(init=False, default_factory=IdleIndex)
    """Boards with no train task handed out (nothing a heartbeat could report cancelled)."""
    clock: Callable[[], datetime] = utc_now

    def __post_init__(self) -> None:
        self.model_store = ModelStore(self.config.model_store_dir, fsync=self.config.fsync)
        self.events = EventLog(self.storage)
        self.metrics = FleetMetrics(self.storage, self.config.heartbeat_timeout_s)
        self.upload_slots = threading.BoundedSemaphore(self.config.upload_concurrency)
        self.upload_admission = threading.BoundedSemaphore(self.config.upload_threads)
