"""The registry's tables (SQLAlchemy 2 declarative); the Alembic migrations must match them exactly.

Ids of nodes, jobs and profile tasks are random text (they are shown to operators and must not be
guessable in sequence); the rest are integers. Statuses are short strings holding the values of the
enums in ``records``. Timestamps are stored in UTC (see ``UtcDateTime``). JSON payloads are opaque
text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Fixed constraint names, so that the same migration drops and alters the same things on SQLite
# and PostgreSQL (otherwise each backend invents its own).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_ID_LENGTH = 32
_STATUS_LENGTH = 16
_NAME_LENGTH = 255
_DIGEST_LENGTH = 64
# A node's own name for its current task (an assignment or a profile task, as text).
_TASK_ID_LENGTH = 64
_EVENT_KIND_LENGTH = 32
_OUTCOME_LENGTH = 16


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the backend keeps.

    SQLite has no time zones: values are stored as UTC text and come back naive, so they are
    made aware again here. Naive values are refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(_NAME_LENGTH))
    hardware_class: Mapped[str] = mapped_column(String(_NAME_LENGTH))
    credential_hash: Mapped[str] = mapped_column(String(_NAME_LENGTH))
    enrolled_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(_STATUS_LENGTH))
    # Server defaults here and below fill the rows that existed before the column (0002).
    agent_version: Mapped[str] = mapped_column(String(_NAME_LENGTH), server_default="")
    current_task_id: Mapped[str | None] = mapped_column(String(_TASK_ID_LENGTH))
    rss_bytes: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        # Nodes alive: "seen since t" (liveness metrics, round selection).
        Index("ix_nodes_last_seen_at", "last_seen_at"),
        # Nodes of one hardware class (they share a memory model; metrics by class).
        Index("ix_nodes_hardware_class", "hardware_class"),
    )


class Hardware(Base):
    __tablename__ = "hardware"

    # One row per node, so the node id is the key: no index beyond it is needed.
    node_id: Mapped[str] = mapped_column(
        String(_ID_LENGTH), ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    ram_bytes: Mapped[int] = mapped_column(BigInteger)
    num_cores: Mapped[int] = mapped_column(Integer)
    cpu_model: Mapped[str] = mapped_column(String(_NAME_LENGTH))
    arch: Mapped[str] = mapped_column(String(_NAME_LENGTH))
    accelerator: Mapped[str | None] = mapped_column(String(_NAME_LENGTH))
    torch_version: Mapped[str] = mapped_column(String(_NAME_LENGTH))
    runtime_baseline_bytes: Mapped[int] = mapped_column(BigInteger)
    memory_budget_bytes: Mapped[int] = mapped_column(BigInteger, server_default="0")
    accelerator_memory_bytes: Mapped[int] = mapped_column(BigInteger, server_default="0")


class MemoryModel(Base):
    __tablename__ = "memory_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hardware_class: Mapped[str] = mapped_column(String(_NAME_LENGTH))
    model: Mapped[str] = mapped_column(String(_NAME_LENGTH))
    image_size: Mapped[int] = mapped_column(Integer)
    payload_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        # One fit per (hardware class, model, image size); serves the planner's lookup, the
        # upsert, and a class's fits (its leading column).
        UniqueConstraint("hardware_class", "model", "image_size"),
    )


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True)
    spec_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(_STATUS_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # A version number of this job's model_versions rather than a foreign key: a key would make
    # jobs and model_versions refer to each other, which SQLite cannot create in one pass.
    final_model_version: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, server_default="")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        # Jobs by state: the jobs to resume after a restart, "jobs list", the jobs-by-state gauge.
        Index("ix_jobs_status", "status"),
    )


class Round(Base):
    __tablename__ = "rounds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(_ID_LENGTH), ForeignKey("jobs.id", ondelete="CASCADE")
    )
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(_STATUS_LENGTH))
    deadline_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    num_selected_nodes: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(_OUTCOME_LENGTH))
    aggregation_s: Mapped[float | None] = mapped_column(Float)
    num_updates: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        # A job's rounds in order, and round N of a job (resume at the last round); one round N.
        UniqueConstraint("job_id", "number"),
    )


class Assignment(Base):
    __tablename__ = "assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(Integer, ForeignKey("rounds.id", ondelete="CASCADE"))
    node_id: Mapped[str] = mapped_column(
        String(_ID_LENGTH), ForeignKey("nodes.id", ondelete="CASCADE")
    )
    batch_size: Mapped[int] = mapped_column(Integer)
    accumulation_steps: Mapped[int] = mapped_column(Integer)
    schedule_json: Mapped[str] = mapped_column(Text)
    predicted_peak_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(_STATUS_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        # A round's assignments; at most one per node and round.
        UniqueConstraint("round_id", "node_id"),
        # A node pulling its next task: its assignments in a given status.
        Index("ix_assignments_node_id_status", "node_id", "status"),
    )


class Update(Base):
    __tablename__ = "updates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(Integer, ForeignKey("rounds.id", ondelete="CASCADE"))
    node_id: Mapped[str] = mapped_column(
        String(_ID_LENGTH), ForeignKey("nodes.id", ondelete="CASCADE")
    )
    num_samples: Mapped[int] = mapped_column(Integer)
    measured_peak_bytes: Mapped[int | None] = mapped_column(BigInteger)
    blob_digest: Mapped[str | None] = mapped_column(String(_DIGEST_LENGTH))
    status: Mapped[str] = mapped_column(String(_STATUS_LENGTH))
    reason: Mapped[str | None] = mapped_column(String(_NAME_LENGTH))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    train_loss: Mapped[float | None] = mapped_column(Float)
    train_duration_s: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        # A round's updates (quorum, aggregation); the first update of a node in a round is the
        # only one: a duplicate violates this constraint.
        UniqueConstraint("round_id", "node_id"),
        # A node's update history (nodes list, debugging a board).
        Index("ix_updates_node_id", "node_id"),
    )


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(_ID_LENGTH), ForeignKey("jobs.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    round_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("rounds.id", ondelete="SET NULL")
    )
    digest: Mapped[str] = mapped_column(String(_DIGEST_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        # Version N of a job (a round's global weights, the final model) and the latest one.
        UniqueConstraint("job_id", "version"),
    )


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(_ID_LENGTH), ForeignKey("jobs.id", ondelete="CASCADE")
    )
    sequence: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    kind: Mapped[str] = mapped_column(String(_EVENT_KIND_LENGTH))
    payload_json: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        # A job's events after sequence N, in order (a client following the timeline), and the
        # job's largest sequence when appending; a sequence number is never given twice.
        UniqueConstraint("job_id", "sequence"),
    )


class ProfileTask(Base):
    __tablename__ = "profile_tasks"

    id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True)
    node_id: Mapped[str] = mapped_column(
        String(_ID_LENGTH), ForeignKey("nodes.id", ondelete="CASCADE")
    )
    job_id: Mapped[str | None] = mapped_column(
        String(_ID_LENGTH), ForeignKey("jobs.id", ondelete="CASCADE")
    )
    hardware_class: Mapped[str] = mapped_column(String(_NAME_LENGTH))
    model: Mapped[str] = mapped_column(String(_NAME_LENGTH))
    image_size: Mapped[int] = mapped_column(Integer)
    batch_sizes_json: Mapped[str] = mapped_column(Text)
    image_sizes_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(_STATUS_LENGTH))
    message: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        # A node pulling its next task: its profile tasks in a given status.
        Index("ix_profile_tasks_node_id_status", "node_id", "status"),
        # Whether a fit is already being measured somewhere (not asking twice for one).
        Index(
            "ix_profile_tasks_hardware_class_model_image_size",
            "hardware_class",
            "model",
            "image_size",
        ),
    )


class NodePlan(Base):
    __tablename__ = "node_plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(_ID_LENGTH), ForeignKey("jobs.id", ondelete="CASCADE")
    )
    node_id: Mapped[str] = mapped_column(
        String(_ID_LENGTH), ForeignKey("nodes.id", ondelete="CASCADE")
    )
    fits: Mapped[bool] = mapped_column(Boolean)
    plan_json: Mapped[str | None] = mapped_column(Text)
    budget_bytes: Mapped[int] = mapped_column(BigInteger)
    shortfall_bytes: Mapped[int] = mapped_column(BigInteger)
    message: Mapped[str] = mapped_column(Text)
    oom_count: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        # One plan per (job, node): serves the upsert, a job's plans in node order, and one
        # node's plan in a job.
        UniqueConstraint("job_id", "node_id"),
    )
