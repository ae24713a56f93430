"""The conductor and the request handlers as plain functions: no gRPC, a registry on SQLite and a
clock the test moves."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load, save

from checkpointing.planning.chain import Chain
from orchestrator.conductor import Conductor
from orchestrator.config import CoordinatorConfig
from orchestrator.handlers import fleet, jobs, tasks, updates
from orchestrator.handlers.transfers import BlobHeader
from orchestrator.planning import ProfileSample
from orchestrator.state import FleetState
from orchestrator.storage import SqlStorage
from orchestrator.storage.records import Hardware, JobStatus, ProfileTaskStatus, RoundStatus

ENROLL = "enroll-secret"
ADMIN = "admin-secret"
CLASSES = 10
MIB = 1 << 20
_PENDING = ProfileTaskStatus.PENDING


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(tmp_path: Path, clock: Clock) -> Iterator[FleetState]:
    config = CoordinatorConfig(
        data_dir=tmp_path, enrollment_token=ENROLL, admin_token=ADMIN, fsync=False
    )
    with SqlStorage(f"sqlite:///{tmp_path / 'registry.db'}", clock=clock) as storage:
        fleet_state = FleetState(storage, config)
        fleet_state.clock = clock
        yield fleet_state


def _weights(value: float | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    tensors = {
        "conv.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "head.weight": rng.standard_normal((CLASSES, 8)).astype(np.float32),
    }
    if value is not None:
        tensors = {name: np.full_like(array, value) for name, array in tensors.items()}
    return tensors


def _blob(data: bytes) -> tuple[BlobHeader, list[tuple[int, bytes]]]:
    header = BlobHeader("safetensors", len(data), hashlib.sha256(data).hexdigest())
    return header, [(0, data)]


def _sample(batch_size: int, image_size: int) -> ProfileSample:
    pixels = batch_size * image_size * image_size
    activations = [12 * pixels, 32 * pixels, 16 * pixels, 4 * CLASSES * batch_size]
    chain = Chain(
        fw=[1e-6 * pixels] * 3,
        bw=[2e-6 * pixels] * 3 + [1e-6],
        cw=activations,
        cbw=[0, *(2 * a for a in activations[1:])],
        ftmp=[a // 2 for a in activations[1:]],
        btmp=[*activations[1:], 64],
    )
    return ProfileSample(batch_size, image_size, ("conv", "block", "head"), chain)


def _board(state: FleetState, name: str) -> fleet.Registration:
    hardware = Hardware(1 << 30, 4, "Cortex-A53", "aarch64", None, "2.9.1", 100 * MIB, 400 * MIB)
    return fleet.register(state, ENROLL, name, hardware, hardware_class="pi")


def _answer_profile(state: FleetState, board: fleet.Registration) -> None:
    task = tasks.pull_task(state, board.node_id, board.credential)
    assert isinstance(task, tasks.ProfileTask)
    samples = [
        _sample(batch, size)
        for batch in task.record.batch_sizes
        for size in task.record.image_sizes
    ]
    upload = tasks.ProfileUpload(
        task.task_id, task.record.model, 4 * MIB, 4096, CLASSES, samples, 0.1, 0
    )
    assert tasks.upload_profile(state, board.node_id, board.credential, upload) is None


def _train(state: FleetState, board: fleet.Registration, value: float) -> updates.UploadVerdict:
    task = tasks.pull_task(state, board.node_id, board.credential)
    assert isinstance(task, tasks.TrainTask), task
    header, chunks = _blob(save(_weights(value)))
    return updates.upload_update(
        state,
        board.credential,
        updates.UpdateHeader(
            board.node_id, task.task_id, task.job_id, task.round, 8, 200 * MIB, 0.5, 1.0, header
        ),
        chunks,
    )


def _plan(state: FleetState, conductor: Conductor, boards: list[fleet.Registration]) -> None:
    """Ticks until a round is open: one board of the class profiles the model on the way."""
    for _ in range(6):
        conductor.tick()
        for board in boards:
            if state.storage.list_profile_tasks(node_id=board.node_id, status=_PENDING):
                _answer_profile(state, board)
        if any(state.storage.list_rounds(job.id) for job in state.storage.list_jobs()):
            return
    raise AssertionError("no round opened")


def _tick_until(conductor: Conductor, done: Callable[[], bool], ticks: int = 6) -> None:
    for _ in range(ticks):
        conductor.tick()
        if done():
            return
    raise AssertionError(f"not done after {ticks} ticks")


def _status(state: FleetState, job_id: str) -> JobStatus:
    job = state.storage.get_job(job_id)
    assert job is not None
    return job.status


def _submit(state: FleetState, **changes: object) -> str:
    header, chunks = _blob(save(_weights()))
    digest = jobs.upload_weights(state, header, chunks)
    spec: dict[str, object] = {
        "name": "unit",
        "student": "tiny",
        "image_size": 32,
        "batch_size": "largest",
        "rounds": 2,
        "local_steps": 2,
        "learning_rate": 0.1,
        "min_nodes": 2,
        "round_deadline_s": 30,
        "num_classes": CLASSES,
        "initial_weights_sha256_hex": digest,
        **changes,
    }
    record, _ = jobs.submit(state, spec)
    return record.id


def test_a_job_is_profiled_planned_trained_and_averaged_round_by_round(
    state: FleetState,
) -> None:
    conductor = Conductor(state)
    boards = [_board(state, "pi-1"), _board(state, "pi-2")]
    job_id = _submit(state)

    _plan(state, conductor, boards)
    first = [_train(state, board, value) for board, value in zip(boards, (1.0, 3.0), strict=True)]
    _tick_until(conductor, lambda: len(state.storage.list_rounds(job_id)) == 2)
    second = [_train(state, board, 0.0) for board in boards]
    _tick_until(conductor, lambda: _status(state, job_id).is_terminal)

    assert all(verdict.rejection is None for verdict in first + second)
    job = state.storage.get_job(job_id)
    assert job is not None and job.status is JobStatus.SUCCEEDED
    made = {version.version: version for version in state.storage.list_model_versions(job_id)}
    assert sorted(made) == [0, 1, 2]
    after_first = load(state.model_store.path(made[1].digest).read_bytes())
    start = _weights()
    # FedAvg of deltas 1.0 and 3.0 with equal sample counts: the model moved by 2.0.
    np.testing.assert_allclose(after_first["conv.weight"], start["conv.weight"] + 2.0, rtol=1e-6)


def test_a_round_nobody_answers_closes_at_its_deadline_on_the_test_clock(
    state: FleetState, clock: Clock
) -> None:
    conductor = Conductor(state)
    boards = [_board(state, "pi-1"), _board(state, "pi-2")]
    job_id = _submit(state, round_deadline_s=30, rounds=1)
    _plan(state, conductor, boards)
    _train(state, boards[0], 1.0)

    clock.advance(29)
    conductor.tick()
    still_open = state.storage.list_rounds(job_id)[0].status
    clock.advance(2)
    conductor.tick()

    (round_,) = state.storage.list_rounds(job_id)
    assert still_open is RoundStatus.OPEN
    assert round_.status is not RoundStatus.OPEN
    job = state.storage.get_job(job_id)
    assert job is not None and job.status is JobStatus.SUCCEEDED
