"""Records refuse values that cannot be right, naming the field."""

from __future__ import annotations

from datetime import datetime

import pytest

from orchestrator.storage import (
    Hardware,
    JobStatus,
    NewAssignment,
    NewJob,
    NewMemoryModel,
    NewRound,
    NewUpdate,
    RoundStatus,
    UpdateStatus,
)


def test_hardware_needs_memory_and_cores() -> None:
    with pytest.raises(ValueError, match="ram_bytes"):
        Hardware(0, 4, "A53", "aarch64", None, "2.5", 0)
    with pytest.raises(ValueError, match="num_cores"):
        Hardware(1 << 30, 0, "A53", "aarch64", None, "2.5", 0)


def test_json_payloads_must_parse() -> None:
    with pytest.raises(ValueError, match="spec_json"):
        NewJob("{not json")
    with pytest.raises(ValueError, match="payload_json"):
        NewMemoryModel("pi3", "mobilenet_v2", None, "")
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
