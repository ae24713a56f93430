"""One round of a board's training, run in this process without a coordinator."""

from __future__ import annotations

import pytest
import torch

from checkpointing.execution.models import FLEET_STUDENT, FLEET_TEACHER, build_model
from checkpointing.execution.split import split_model
from checkpointing.planning.solvers.baselines import recompute_all, store_all
from node_agent.trainer import (
    InvalidTask,
    MemoryGuardTripped,
    RoundResult,
    TaskStopped,
    train_round,
)
from node_agent.weights import from_bytes, to_bytes
from protos.edgefleet.v1 import common_pb2, fleet_pb2

_SIDE = 32
_CLASSES = 6
_BATCH = 4


def _stages() -> int:
    student = build_model(FLEET_STUDENT, _CLASSES)
    return len(split_model(student, torch.zeros(_BATCH, 3, _SIDE, _SIDE)))


def _task(schedule: list[str], **changes: object) -> fleet_pb2.TrainTask:
    """A task for the demo's student at 32 px, two steps of batch 4."""
    fields: dict[str, object] = {
        "job_id": "job",
        "round": 0,
        "model_name": FLEET_STUDENT,
        "image_size": _SIDE,
        "batch_size": _BATCH,
        "accumulation_steps": 1,
        "schedule": schedule,
        "local_steps": 2,
        "optimizer": common_pb2.OPTIMIZER_SGD,
        "learning_rate": 0.05,
        "teacher_model_name": FLEET_TEACHER,
        "temperature": 4.0,
        "num_classes": _CLASSES,
    }
    fields.update(changes)
    return fleet_pb2.TrainTask(**fields)  # type: ignore[arg-type]


def _round(
    task: fleet_pb2.TrainTask, limit_bytes: int = 1 << 40, stop: str | None = None
) -> RoundResult:
    torch.manual_seed(0)
    start = to_bytes(build_model(FLEET_STUDENT, _CLASSES).state_dict())
    teacher = build_model(FLEET_TEACHER, _CLASSES).eval()
    frames = torch.randint(0, 256, (16, 3, _SIDE, _SIDE), dtype=torch.uint8)
    return train_round(
        task,
        start,
        frames,
        teacher,
        limit_bytes=limit_bytes,
        reset_peak=lambda: None,
        measure_peak=lambda: 1000,
        stop_reason=lambda: stop,
        seed=3,
    )


def test_a_round_sends_the_delta_and_recomputing_changes_nothing_in_it() -> None:
    stages = _stages()

    stored = _round(_task(store_all(stages).to_strings()))
    recomputed = _round(_task(recompute_all(stages).to_strings()))

    assert stored.num_samples == 2 * _BATCH
    assert stored.measured_peak_bytes == 1000
    a, b = from_bytes(stored.update), from_bytes(recomputed.update)
    assert a.keys() == b.keys()
    assert any(bool(tensor.abs().sum() > 0) for tensor in a.values() if tensor.is_floating_point())
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7)


def test_a_pass_above_the_guard_ends_the_round_with_the_peak_seen() -> None:
    with pytest.raises(MemoryGuardTripped) as tripped:
        _round(_task(store_all(_stages()).to_strings()), limit_bytes=999)

    assert tripped.value.observed_peak_bytes == 1000


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": common_pb2.OPTIMIZER_UNSPECIFIED}, "no optimizer"),
        ({"batch_size": 0}, "must be positive"),
        ({"schedule": ["Fe_0", "Loss"]}, "schedule does not fit"),
    ],
)
def test_a_task_this_board_cannot_run_is_invalid(changes: dict[str, object], message: str) -> None:
    task = _task(**{"schedule": store_all(_stages()).to_strings(), **changes})  # type: ignore[arg-type]

    with pytest.raises(InvalidTask, match=message):
        _round(task)


def test_a_stop_asked_for_between_passes_ends_the_round() -> None:
    with pytest.raises(TaskStopped) as stopped:
        _round(_task(store_all(_stages()).to_strings()), stop="deadline")

    assert stopped.value.reason == "deadline"
