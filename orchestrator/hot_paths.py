"""What the fleet service keeps in memory so that an idle board's calls stay off the registry.

A thousand boards heartbeating and pulling make a few hundred calls a second, almost all of which
change nothing: the board is who it was, it is still alive, and it still has nothing to do. The
registry stays the source of truth; these are caches of it that a restarted coordinator starts
without (so its first call per board reads the registry again):

- ``CredentialCache``: a credential checked against its stored hash is remembered (as a digest,
  never in clear) for ``ttl_s``, so a board disabled in the registry is refused within that time;
- ``SeenBuffer``: when each board was last seen, written to the registry in one batch every few
  seconds instead of one write transaction per call (SQLite serialises writers);
- ``IdleIndex``: boards for which the registry was just found to hold nothing to do; only the
  conductor creates work, and it wakes the board in the index when it does.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import datetime

from orchestrator.storage import Storage
from orchestrator.storage.records import NodeRecord, NodeSeen


class CredentialCache:
    """Node records by (node id, credential) for callers that proved the credential lately."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[bytes, tuple[NodeRecord, float]] = {}

    @staticmethod
    def _key(node_id: str, credential: str) -> bytes:
        # A digest, so the process never holds a board's credential longer than its call.
        return hashlib.sha256(f"{node_id}\0{credential}".encode()).digest()

    def get(self, node_id: str, credential: str) -> NodeRecord | None:
        key = self._key(node_id, credential)
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            node, expires = found
            if self._clock() >= expires:
                del self._entries[key]
                return None
            return node

    def put(self, credential: str, node: NodeRecord) -> None:
        with self._lock:
            self._entries[self._key(node.id, credential)] = (node, self._clock() + self._ttl_s)

    def forget(self, node_id: str) -> None:
        """Drop every remembered credential of ``node_id`` (its record changed)."""
        with self._lock:
            for key in [k for k, (node, _) in self._entries.items() if node.id == node_id]:
                del self._entries[key]


class SeenBuffer:
    """The latest sighting of each board since the last flush, written in one transaction."""

    def __init__(self, flush_every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not flush_every_s > 0:
            raise ValueError(f"flush_every_s must be positive, got {flush_every_s}")
        self._flush_every_s = flush_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._pending: dict[str, NodeSeen] = {}
        self._flushed_at = clock()

    def record(
        self,
        node_id: str,
        seen_at: datetime,
        *,
        current_task_id: str | None = None,
        rss_bytes: int | None = None,
    ) -> None:
        """Like ``Storage.touch_node``: ``None`` clears what the node reported before."""
        with self._lock:
            self._pending[node_id] = NodeSeen(seen_at, current_task_id, rss_bytes)

    def flush(self, storage: Storage, *, only_if_due: bool = False) -> int:
        """Write what is pending; return how many boards. ``only_if_due``: at most so often."""
        with self._flushing:
            if only_if_due and self._clock() - self._flushed_at < self._flush_every_s:
                return 0
            with self._lock:
                pending, self._pending = self._pending, {}
            self._flushed_at = self._clock()
            if pending:
                try:
                    storage.touch_nodes(pending)
                except BaseException:
                    with self._lock:
                        # Newer sightings that arrived meanwhile win over the ones not written.
                        self._pending = {**pending, **self._pending}
                    raise
            return len(pending)


class IdleIndex:
    """Boards the registry was found to hold nothing for, since nothing has woken them.

    A reader takes ``epoch()`` before it queries the registry and calls ``settle(node, epoch)``
    when the query found nothing; a ``wake`` in between (work created meanwhile) makes the settle
    a no-op, so work is never hidden by a query that raced its creation.
    """

    def __init__(self) -> None:
        self._idle: set[str] = set()
        self._epoch = 0
        self._lock = threading.Lock()

    def is_idle(self, node_id: str) -> bool:
        with self._lock:
            return node_id in self._idle

    def epoch(self) -> int:
        with self._lock:
            return self._epoch

    def settle(self, node_id: str, epoch: int) -> None:
        with self._lock:
            if epoch == self._epoch:
                self._idle.add(node_id)

    def wake(self, node_id: str) -> None:
        with self._lock:
            self._epoch += 1
            self._idle.discard(node_id)
