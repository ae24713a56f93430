"""A job's history as numbered events, kept in the registry, with a wake-up for watchers.

Every change a watcher should see (state, round start and end, each update, node failures) is
appended here. The registry numbers a job's events 1, 2, 3... so a watcher that reconnects with
the last number it saw misses nothing, across coordinator restarts too. ``wait`` wakes watchers of
this process when anything is appended instead of having them poll the database.
"""

from __future__ import annotations

import enum
import json
import threading
from collections.abc import Mapping

from orchestrator.storage import Storage
from orchestrator.storage.records import EventRecord, NewEvent


class EventKind(enum.StrEnum):
    STATE_CHANGED = "state_changed"
    ROUND_STARTED = "round_started"
    UPDATE_RECEIVED = "update_received"
    ROUND_COMPLETED = "round_completed"
    NODE_FAILED = "node_failed"


class EventLog:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._appended = threading.Condition()
        self._generation = 0

    def append(self, job_id: str, kind: EventKind, payload: Mapping[str, object]) -> EventRecord:
        record = self._storage.append_event(
            NewEvent(job_id=job_id, kind=kind.value, payload_json=json.dumps(dict(payload)))
        )
        with self._appended:
            self._generation += 1
            self._appended.notify_all()
        return record

    @property
    def generation(self) -> int:
        """Changes with every append; pass it to ``wait`` to sleep until the next one."""
        with self._appended:
            return self._generation

    def wait(self, generation: int, timeout_s: float) -> None:
        """Return once an event was appended after ``generation`` was read, or after the timeout."""
        with self._appended:
            self._appended.wait_for(lambda: self._generation != generation, timeout=timeout_s)
