"""Plain records that go in and out of the registry: no ORM object ever leaves the storage package.

``New*`` records are what a caller asks to create; the others are what was stored, with the ids
and timestamps the store gave them. Every timestamp is timezone-aware UTC. JSON payloads (a job's
spec, an assignment's schedule, a fitted memory model) travel as JSON text: the registry keeps
them, it does not interpret them.
"""

from __future__ import annotations

import json
import math
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


class ProfileTaskStatus(StrEnum):
    PENDING = "pending"
    """Asked for, not yet pulled by its node."""
    SENT = "sent"
    DONE = "done"
    """The node reported its measurements (the fit itself is a memory model)."""
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (ProfileTaskStatus.DONE, ProfileTaskStatus.FAILED)


EVENT_KIND_LENGTH = 32
"""Longest ``NewEvent.kind`` (its column's width)."""


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


def _require_non_negative_finite(name: str, value: float | None) -> None:
    # SQLite stores NaN as NULL: a non-finite value would come back as another value, or fail.
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")


def _require_text(name: str, value: str) -> None:
    if not value:
        raise ValueError(f"{name} must not be empty")


def _require_sizes(name: str, values: tuple[int, ...]) -> None:
    if not values:
        raise ValueError(f"{name} must not be empty")
    if any(value <= 0 for value in values):
        raise ValueError(f"{name} must all be > 0, got {values}")


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
    memory_budget_bytes: int = 0
    """The memory the agent was told it may use; 0 when it reported none."""
    accelerator_memory_bytes: int = 0
    """0 without an accelerator, or when the agent could not tell."""

    def __post_init__(self) -> None:
        if self.ram_bytes <= 0:
            raise ValueError(f"ram_bytes must be > 0, got {self.ram_bytes}")
        if self.num_cores <= 0:
            raise ValueError(f"num_cores must be > 0, got {self.num_cores}")
        _require_non_negative("runtime_baseline_bytes", self.runtime_baseline_bytes)
        _require_non_negative("memory_budget_bytes", self.memory_budget_bytes)
        _require_non_negative("accelerator_memory_bytes", self.accelerator_memory_bytes)
        _require_text("arch", self.arch)


@dataclass(frozen=True)
class NewNode:
    name: str
    hardware_class: str
    credential_hash: str
    """Never the credential itself: see ``orchestrator.storage.credentials``."""
    hardware: Hardware
    agent_version: str = ""

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
    agent_version: str = ""
    current_task_id: str | None = None
    """What the node said it is working on at its last heartbeat; ``None`` when idle."""
    rss_bytes: int | None = None
    """The agent's resident memory at its last heartbeat, if it reported it."""


@dataclass(frozen=True)
class NodeSeen:
    """A sighting of a node, as ``Storage.touch_nodes`` writes it (see ``touch_node``)."""

    seen_at: datetime
    current_task_id: str | None = None
    rss_bytes: int | None = None


@dataclass(frozen=True)
class NewMemoryModel:
    hardware_class: str
    model: str
    image_size: int
    """Fits are per image size: one fit per (hardware class, model, image size)."""
    payload_json: str

    def __post_init__(self) -> None:
        _require_text("hardware_class", self.hardware_class)
        _require_text("model", self.model)
        if self.image_size <= 0:
            raise ValueError(f"image_size must be > 0, got {self.image_size}")
        _require_json("payload_json", self.payload_json)


@dataclass(frozen=True)
class MemoryModelRecord:
    hardware_class: str
    model: str
    image_size: int
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
    message: str
    """Why the job is in its status, for operators (empty until something is said)."""
    updated_at: datetime
    """The last write to the job: its creation, then every ``update_job``."""


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
    outcome: str | None = None
    """How the round ended, in a word (set when it closes)."""
    aggregation_s: float | None = None
    num_updates: int | None = None
    """The updates aggregated into the round's model."""


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
    train_loss: float | None = None
    """The node's mean training loss; ``None`` when it sent none or it was not finite."""
    train_duration_s: float | None = None

    def __post_init__(self) -> None:
        _require_non_negative("num_samples", self.num_samples)
        _require_non_negative("measured_peak_bytes", self.measured_peak_bytes)
        if self.train_loss is not None and not math.isfinite(self.train_loss):
            raise ValueError(f"train_loss must be finite or None, got {self.train_loss}")
        _require_non_negative_finite("train_duration_s", self.train_duration_s)
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
    train_loss: float | None = None
    train_duration_s: float | None = None


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


@dataclass(frozen=True)
class NewEvent:
    """Something that happened to a job: its timeline, which clients read in order."""

    job_id: str
    kind: str
    payload_json: str

    def __post_init__(self) -> None:
        _require_text("kind", self.kind)
        if len(self.kind) > EVENT_KIND_LENGTH:
            raise ValueError(f"kind must be at most {EVENT_KIND_LENGTH} characters: {self.kind!r}")
        _require_json("payload_json", self.payload_json)


@dataclass(frozen=True)
class EventRecord:
    id: int
    job_id: str
    sequence: int
    """1 for a job's first event, then one more per event: no gaps, so a reader can resume."""
    created_at: datetime
    kind: str
    payload_json: str


@dataclass(frozen=True)
class NewProfileTask:
    """A request that a node measure a model's memory at some batch and image sizes."""

    node_id: str
    job_id: str | None
    """The job waiting for the fit; ``None`` for profiling asked for outside a job."""
    hardware_class: str
    model: str
    image_size: int
    """The size of the memory model the measurements will fit."""
    batch_sizes: tuple[int, ...]
    image_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        _require_text("node_id", self.node_id)
        _require_text("hardware_class", self.hardware_class)
        _require_text("model", self.model)
        if self.image_size <= 0:
            raise ValueError(f"image_size must be > 0, got {self.image_size}")
        _require_sizes("batch_sizes", self.batch_sizes)
        _require_sizes("image_sizes", self.image_sizes)


@dataclass(frozen=True)
class ProfileTaskRecord:
    id: str
    node_id: str
    job_id: str | None
    hardware_class: str
    model: str
    image_size: int
    batch_sizes: tuple[int, ...]
    image_sizes: tuple[int, ...]
    status: ProfileTaskStatus
    message: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class NewNodePlan:
    """What the planner decided for one node in one job: its plan, or why it does not fit."""

    job_id: str
    node_id: str
    fits: bool
    plan_json: str | None
    """The plan (batch size, schedule, predicted peak, ...); required when the node fits."""
    budget_bytes: int
    shortfall_bytes: int = 0
    """How much more memory the node would need to fit; 0 when it fits."""
    message: str = ""
    oom_count: int = 0
    """Out-of-memory failures of the node in this job so far."""

    def __post_init__(self) -> None:
        if self.fits and self.plan_json is None:
            raise ValueError("a node that fits needs its plan_json")
        if self.plan_json is not None:
            _require_json("plan_json", self.plan_json)
        _require_non_negative("budget_bytes", self.budget_bytes)
        _require_non_negative("shortfall_bytes", self.shortfall_bytes)
        _require_non_negative("oom_count", self.oom_count)


@dataclass(frozen=True)
class NodePlanRecord:
    job_id: str
    node_id: str
    fits: bool
    plan_json: str | None
    budget_bytes: int
    shortfall_bytes: int
    message: str
    oom_count: int
    updated_at: datetime
