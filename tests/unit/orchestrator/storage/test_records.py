"""Records refuse values that cannot be right, naming the field."""

from __future__ import annotations

from datetime import datetime

import pytest

from orchestrator.storage import (
    Hardware,
    JobStatus,
    NewAssignment,
    NewEvent,
    NewJob,
    NewMemoryModel,
    NewNodePlan,
    NewProfileTask,
    NewRound,
    NewUpdate,
    ProfileTaskStatus,
    RoundStatus,
    UpdateStatus,
)


def test_hardware_needs_memory_and_cores() -> None:
    with pytest.raises(ValueError, match="ram_bytes"):
        Hardware(0, 4, "A53", "aarch64", None, "2.5", 0)
    with pytest.raises(ValueError, match="num_cores"):
        Hardware(1 << 30, 0, "A53", "aarch64", None, "2.5", 0)


def test_hardware_memory_sizes_default_to_zero_and_cannot_be_negative() -> None:
    hardware = Hardware(1 << 30, 4, "A53", "aarch64", None, "2.5", 0)

    assert (hardware.memory_budget_bytes, hardware.accelerator_memory_bytes) == (0, 0)
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        Hardware(1 << 30, 4, "A53", "aarch64", None, "2.5", 0, memory_budget_bytes=-1)
    with pytest.raises(ValueError, match="accelerator_memory_bytes"):
        Hardware(1 << 30, 4, "A53", "aarch64", None, "2.5", 0, accelerator_memory_bytes=-1)


def test_a_memory_model_is_for_one_positive_image_size() -> None:
    with pytest.raises(ValueError, match="image_size"):
        NewMemoryModel("pi3", "mobilenet_v2", 0, "{}")


def test_json_payloads_must_parse() -> None:
    with pytest.raises(ValueError, match="spec_json"):
        NewJob("{not json")
    with pytest.raises(ValueError, match="payload_json"):
        NewMemoryModel("pi3", "mobilenet_v2", 224, "")
    with pytest.raises(ValueError, match="schedule_json"):
        NewAssignment(1, "n", 4, 1, "[", 0)


def test_a_round_deadline_must_carry_a_time_zone() -> None:
    with pytest.raises(ValueError, match="deadline_at"):
        NewRound("job", 0, datetime(2025, 1, 1), 3)


def test_updates_say_where_their_bytes_are_or_why_they_were_rejected() -> None:
    with pytest.raises(ValueError, match="blob_digest"):
        NewUpdate(1, "n", 10, None, None, UpdateStatus.ACCEPTED)
    with pytest.raises(ValueError, match="reason"):
        NewUpdate(1, "n", 10, None, None, UpdateStatus.REJECTED)


@pytest.mark.parametrize(
    ("train_loss", "train_duration_s", "field"),
    [
        (float("nan"), None, "train_loss"),
        (float("inf"), None, "train_loss"),
        (None, -1.0, "train_duration_s"),
        (None, float("nan"), "train_duration_s"),
    ],
)
def test_training_figures_of_an_update_are_finite(
    train_loss: float | None, train_duration_s: float | None, field: str
) -> None:
    # SQLite would store NaN as NULL: the figure would come back as another value.
    with pytest.raises(ValueError, match=field):
        NewUpdate(
            1,
            "n",
            10,
            None,
            "a" * 64,
            UpdateStatus.ACCEPTED,
            train_loss=train_loss,
            train_duration_s=train_duration_s,
        )


def test_events_have_a_short_kind_and_a_json_payload() -> None:
    with pytest.raises(ValueError, match="kind"):
        NewEvent("job", "", "{}")
    with pytest.raises(ValueError, match="kind"):
        NewEvent("job", "k" * 33, "{}")
    with pytest.raises(ValueError, match="payload_json"):
        NewEvent("job", "round_opened", "{")


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("image_size", {"image_size": 0}),
        ("batch_sizes", {"batch_sizes": ()}),
        ("batch_sizes", {"batch_sizes": (4, 0)}),
        ("image_sizes", {"image_sizes": ()}),
        ("image_sizes", {"image_sizes": (-32,)}),
        ("model", {"model": ""}),
    ],
)
def test_profile_tasks_ask_for_positive_sizes(field: str, changes: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "node_id": "node",
        "job_id": None,
        "hardware_class": "pi3",
        "model": "mobilenet_v2",
        "image_size": 224,
        "batch_sizes": (1, 2, 4),
        "image_sizes": (64, 128),
    }

    with pytest.raises(ValueError, match=field):
        NewProfileTask(**(fields | changes))  # type: ignore[arg-type]


def test_a_node_plan_that_fits_carries_its_plan() -> None:
    with pytest.raises(ValueError, match="plan_json"):
        NewNodePlan("job", "node", fits=True, plan_json=None, budget_bytes=1 << 30)
    with pytest.raises(ValueError, match="plan_json"):
        NewNodePlan("job", "node", fits=True, plan_json="{", budget_bytes=1 << 30)
    with pytest.raises(ValueError, match="shortfall_bytes"):
        NewNodePlan("job", "node", False, None, 1 << 30, shortfall_bytes=-1)
    with pytest.raises(ValueError, match="oom_count"):
        NewNodePlan("job", "node", False, None, 1 << 30, oom_count=-1)

    refused = NewNodePlan("job", "node", False, None, 1 << 30, shortfall_bytes=64 << 20)

    assert refused.message == "" and refused.oom_count == 0


def test_terminal_states() -> None:
    assert {status for status in JobStatus if status.is_terminal} == {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    }
    assert {status for status in RoundStatus if status.is_terminal} == {
        RoundStatus.COMPLETED,
        RoundStatus.FAILED,
    }
    assert {status for status in ProfileTaskStatus if status.is_terminal} == {
        ProfileTaskStatus.DONE,
        ProfileTaskStatus.FAILED,
    }
