"""Round bookkeeping shared by handlers and the conductor, on a real registry (SQLite)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import rounds
from orchestrator.storage import SqlStorage
from orchestrator.storage.records import NewJob, NewModelVersion


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SqlStorage]:
    with SqlStorage(f"sqlite:///{tmp_path / 'registry.db'}") as opened:
        yield opened


def test_a_round_starts_from_the_newest_model_made_before_it(storage: SqlStorage) -> None:
    job = storage.create_job(NewJob(json.dumps({"student": "mobilenet_v2"})))
    for version in (0, 2):
        storage.create_model_version(NewModelVersion(job.id, version, None, f"{version:064x}"))

    started = [rounds.starting_model(storage, job.id, number).version for number in (0, 1, 2, 5)]

    # Version n + 1 is what round n made: round 0 made none (it failed), round 1 made version 2;
    # a round starts from the newest version numbered at most its own.
    assert started == [0, 0, 2, 2]


def test_a_job_without_any_model_is_its_own_error_not_an_rpc_status(storage: SqlStorage) -> None:
    job = storage.create_job(NewJob(json.dumps({"student": "mobilenet_v2"})))

    with pytest.raises(rounds.NoModelYet, match=job.id):
        rounds.starting_model(storage, job.id, 0)
