from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from orchestrator.hot_paths import CredentialCache, IdleIndex, SeenBuffer
from orchestrator.storage import Hardware, NewNode, NodeRecord, SqlStorage, sqlite_url

PI = Hardware(
    ram_bytes=1 << 30,
    num_cores=4,
    cpu_model="Cortex-A53",
    arch="aarch64",
    accelerator=None,
    torch_version="2.5.1",
    runtime_baseline_bytes=180 << 20,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _node(storage: SqlStorage, name: str) -> NodeRecord:
    return storage.create_node(NewNode(name, "pi", "sha256$00$11", PI))


def test_a_checked_credential_is_trusted_until_it_expires_or_is_forgotten(
    tmp_path: Path,
) -> None:
    clock = Clock()
    cache = CredentialCache(ttl_s=60, clock=clock)
    with SqlStorage(sqlite_url(tmp_path / "r.sqlite3")) as storage:
        pi, other = _node(storage, "pi"), _node(storage, "other")
    cache.put("secret", pi)
    cache.put("other-secret", other)

    hit = cache.get(pi.id, "secret")
    wrong = cache.get(pi.id, "guess")
    swapped = cache.get(other.id, "secret")
    cache.forget(other.id)
    forgotten = cache.get(other.id, "other-secret")
    clock.now += 60
    expired = cache.get(pi.id, "secret")

    assert hit == pi
    assert (wrong, swapped, forgotten, expired) == (None, None, None, None)


def test_sightings_reach_the_registry_in_one_flush_when_due(tmp_path: Path) -> None:
    clock = Clock()
    buffer = SeenBuffer(flush_every_s=2, clock=clock)
    seen = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
    with SqlStorage(sqlite_url(tmp_path / "r.sqlite3")) as storage:
        pi, xu = _node(storage, "pi"), _node(storage, "xu")
        buffer.record(pi.id, seen, current_task_id="train-1", rss_bytes=5)
        buffer.record(xu.id, seen)
        buffer.record(pi.id, seen)

        early = buffer.flush(storage, only_if_due=True)
        clock.now += 2
        due = buffer.flush(storage, only_if_due=True)
        again = buffer.flush(storage)
        found = storage.get_node(pi.id)

    assert (early, due, again) == (0, 2, 0)
    assert found is not None
    # The last sighting wins, and like a heartbeat without them it clears task and memory.
    assert (found.last_seen_at, found.current_task_id, found.rss_bytes) == (seen, None, None)


def test_work_created_while_a_board_was_being_found_idle_is_not_hidden() -> None:
    index = IdleIndex()

    raced = index.epoch()
    index.wake("pi")
    index.settle("pi", raced)
    after_race = index.is_idle("pi")
    index.settle("pi", index.epoch())
    settled = index.is_idle("pi")
    index.wake("pi")

    assert (after_race, settled, index.is_idle("pi")) == (False, True, False)
