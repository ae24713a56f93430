"""Plain records that go in and out of the registry: no ORM object ever leaves the storage package.

``New*`` records are what a caller asks to create; the others are what was stored, with the ids
and timestamps the store gave them. Every timestamp is timezone-aware UTC. JSON payloads (a job's
spec, an assignment's schedule, a fitted memory model) travel as JSON text: the registry keeps
them, it does not interpret them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class NodeStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class RoundStatus(StrEnum):
    OPEN = "open"
    """Collecting updates until a quorum or the deadline."""
    AGGREGATING = "aggregating"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (RoundStatus.COMPLETED, RoundStatus.FAILED)


class AssignmentStatus(StrEnum):
    PENDING = "pending"
    """Planned, not yet pulled by its node."""
    SENT = "sent"
    DONE = "done"
    """The node's update arrived (accepted or rejected: see the update)."""
    FAILED = "failed"
    """The node reported a failure (out-of-memory included)."""


class UpdateStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


def _require_aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")


def _require_json(name: str, text: str) -> None:
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name} is not valid JSON: {error}") from error


def _require_non_negative(name: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _require_text(name: str, value: str) -> None:
    if not value:
        raise ValueError(f"{name} must not be empty")


@dataclass(frozen=True)
class Hardware:
    """What a board reported when it registered."""

    ram_bytes: int
    num_cores: int
    cpu_model: str
    arch: str
    accelerator: str | None
    torch_version: str
    runtime_baseline_bytes: int
    """Resident memory of the agent's process before any training (interpreter, torch, ...)."""

    def __post_init__(self) -> None:
        if self.ram_bytes <= 0:
            raise ValueError(f"ram_bytes must be > 0, got {self.ram_bytes}")
        if self.num_cores <= 0:
            raise ValueError(f"num_cores must be > 0, got {self.num_cores}")
        _require_non_negative("runtime_baseline_bytes", self.runtime_baseline_bytes)
        _require_text("arch", self.arch)


@dataclass(frozen=True)
class NewNode:
    name: str
    hardware_class: str
    credential_hash: str
    """Never the credential itself: see ``orchestrator.storage.credentials``."""
    hardware: Hardware

    def __post_init__(self) -> None:
        _require_text("name", self.name)
        _require_text("hardware_class", self.hardware_class)
        _require_text("credential_hash", self.credential_hash)


@dataclass(frozen=True)
class NodeRecord:
    id: str
    name: str
    hardware_class: str
    credential_hash: str
    enrolled_at: datetime
    last_seen_at: datetime
    status: NodeStatus
    hardware: Hardware


@dataclass(frozen=True)
class NewMemoryModel:
    hardware_class: str
    model: str
    image_size: int | None
    """``None`` for a fit that holds at every image size."""
    payload_json: str

    def __post_init__(self) -> None:
        _require_text("hardware_class", self.hardware_class)
        _require_text("model", self.model)
        if self.image_size is not None and self.image_size <= 0:
            raise ValueError(f"image_size must be > 0 or None, got {self.image_size}")
        _require_json("payload_json", self.payload_json)


@dataclass(frozen=True)
class MemoryModelRecord:
    hardware_class: str
    model: str
    image_size: int | None
    payload_json: str
    created_at: datetime


@dataclass(frozen=True)
class NewJob:
    spec_json: str

    def __post_init__(self) -> None:
        _require_json("spec_json", self.spec_json)


@dataclass(frozen=True)
class JobRecord:
    id: str
    spec_json: str
    status: JobStatus
    created_at: datetime
    finished_at: datetime | None
    final_model_version: int | None
    """A ``ModelVersionRecord.version`` of this job, once it has a final model."""


@dataclass(frozen=True)
class NewRound:
    job_id: str
    number: int
    deadline_at: datetime
    num_selected_nodes: int

    def __post_init__(self) -> None:
        _require_non_negative("number", self.number)
        _require_non_negative("num_selected_nodes", self.num_selected_nodes)
        _require_aware("deadline_at", self.deadline_at)


@dataclass(frozen=True)
class RoundRecord:
    id: int
    job_id: str
    number: int
    status: RoundStatus
    deadline_at: datetime
    started_at: datetime
    finished_at: datetime | None
    num_selected_nodes: int


@dataclass(frozen=True)
class NewAssignment:
    round_id: int
    node_id: str
    batch_size: int
    accumulation_steps: int
    schedule_json: str
    predicted_peak_bytes: int

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {self.batch_size}")
        if self.accumulation_steps <= 0:
            raise ValueError(f"accumulation_steps must be > 0, got {self.accumulation_steps}")
        _require_non_negative("predicted_peak_bytes", self.predicted_peak_bytes)
        _require_json("schedule_json", self.schedule_json)


@dataclass(frozen=True)
class AssignmentRecord:
    id: int
    round_id: int
    node_id: str
    batch_size: int
    accumulation_steps: int
    schedule_json: str
    predicted_peak_bytes: int
    status: AssignmentStatus
    created_at: datetime


@dataclass(frozen=True)
class NewUpdate:
    round_id: int
    node_id: str
    num_samples: int
    measured_peak_bytes: int | None
    blob_digest: str | None
    """SHA-256 (hex) of its safetensors file in the model store; ``None`` if never stored."""
    status: UpdateStatus
    reason: str | None = None
    """Why it was rejected (``late``, ``wrong_shape``, ``non_finite``, ...)."""

    def __post_init__(self) -> None:
        _require_non_negative("num_samples", self.num_samples)
        _require_non_negative("measured_peak_bytes", self.measured_peak_bytes)
        if self.status is UpdateStatus.ACCEPTED and self.blob_digest is None:
            raise ValueError("an accepted update needs its blob_digest")
        if self.status is UpdateStatus.REJECTED and not self.reason:
            raise ValueError("a rejected update needs a reason")


@dataclass(frozen=True)
class UpdateRecord:
    id: int
    round_id: int
    node_id: str
    num_samples: int
    measured_peak_bytes: int | None
    blob_digest: str | None
    status: UpdateStatus
    reason: str | None
    received_at: datetime


@dataclass(frozen=True)
class NewModelVersion:
    job_id: str
    version: int
    """0 for the job's initial weights, then one more per aggregated round."""
    round_id: int | None
    """The round whose aggregation made it; ``None`` for the initial weights."""
    digest: str

    def __post_init__(self) -> None:
        _require_non_negative("version", self.version)
        _require_text("digest", self.digest)


@dataclass(frozen=True)
class ModelVersionRecord:
    id: int
    job_id: str
    version: int
    round_id: int | None
    digest: str
    created_at: datetime
