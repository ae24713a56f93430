"""``SqlStorage``: the registry in SQL through SQLAlchemy 2 (a SQLite file, or PostgreSQL by URL).

Each method is one transaction. Writes that check something before writing (a status, that a
referenced row exists) run on SQLite with the write lock taken up front (see ``engine``) and on
PostgreSQL with the row locked (``SELECT ... FOR UPDATE``), so two coordinator threads cannot both
pass the check. Constraint violations that remain (a duplicate) surface as ``StorageConflict``.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar, overload

from sqlalchemy import CursorResult, Select, Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.storage import schema
from orchestrator.storage.engine import WRITE_OPTION, create_storage_engine
from orchestrator.storage.errors import StorageConflict, StorageNotFound
from orchestrator.storage.interface import Storage
from orchestrator.storage.migrate import migrate
from orchestrator.storage.records import (
    AssignmentRecord,
    AssignmentStatus,
    EventRecord,
    Hardware,
    JobRecord,
    JobStatus,
    MemoryModelRecord,
    ModelVersionRecord,
    NewAssignment,
    NewEvent,
    NewJob,
    NewMemoryModel,
    NewModelVersion,
    NewNode,
    NewNodePlan,
    NewProfileTask,
    NewRound,
    NewUpdate,
    NodePlanRecord,
    NodeRecord,
    NodeSeen,
    NodeStatus,
    ProfileTaskRecord,
    ProfileTaskStatus,
    RoundRecord,
    RoundStatus,
    UpdateRecord,
    UpdateStatus,
)

_Row = TypeVar("_Row", bound=schema.Base)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


class SqlStorage:
    """The registry at ``url``, migrated to the newest schema unless ``run_migrations`` is off."""

    def __init__(
        self,
        url: str,
        *,
        run_migrations: bool = True,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if run_migrations:
            migrate(url)
        self._engine = create_storage_engine(url)
        self._reads = sessionmaker(self._engine, expire_on_commit=False)
        self._writes = sessionmaker(
            self._engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )
        self._clock = clock

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> SqlStorage:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _dialect_insert(self) -> Callable[..., Any]:
        # Both dialects have INSERT ... ON CONFLICT DO UPDATE: an upsert in one statement, so
        # two writers of one key at once cannot make the second insert fail.
        return postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert

    # Nodes and their hardware.

    def create_node(self, node: NewNode) -> NodeRecord:
        now = self._clock()
        row = schema.Node(
            id=_new_id(),
            name=node.name,
            hardware_class=node.hardware_class,
            credential_hash=node.credential_hash,
            enrolled_at=now,
            last_seen_at=now,
            status=NodeStatus.ACTIVE.value,
            agent_version=node.agent_version,
            current_task_id=None,
            rss_bytes=None,
        )
        hardware = _hardware_row(row.id, node.hardware)
        with self._writes.begin() as session:
            session.add(row)
            session.flush()  # The node before its hardware: the foreign key wants it.
            session.add(hardware)
            session.flush()
            return _node_record(row, hardware)

    def get_node(self, node_id: str) -> NodeRecord | None:
        with self._reads() as session:
            found = session.execute(_nodes().where(schema.Node.id == node_id)).first()
            if found is None:
                return None
            node, hardware = found
            return _node_record(node, hardware)

    def list_nodes(self, *, hardware_class: str | None = None) -> Sequence[NodeRecord]:
        query = _nodes()
        if hardware_class is not None:
            query = query.where(schema.Node.hardware_class == hardware_class)
        with self._reads() as session:
            return [_node_record(node, hardware) for node, hardware in session.execute(query)]

    def nodes_seen_since(self, since: datetime) -> Sequence[NodeRecord]:
        _aware("since", since)
        query = _nodes().where(schema.Node.last_seen_at >= since)
        with self._reads() as session:
            return [_node_record(node, hardware) for node, hardware in session.execute(query)]

    def touch_node(
        self,
        node_id: str,
        seen_at: datetime | None = None,
        *,
        current_task_id: str | None = None,
        rss_bytes: int | None = None,
    ) -> None:
        _aware("seen_at", seen_at)
        _fits("current_task_id", current_task_id, schema.Node.current_task_id)
        if rss_bytes is not None and rss_bytes < 0:
            raise ValueError(f"rss_bytes must be >= 0, got {rss_bytes}")
        statement = (
            update(schema.Node)
            .where(schema.Node.id == node_id)
            .values(
                last_seen_at=self._clock() if seen_at is None else seen_at,
                current_task_id=current_task_id,
                rss_bytes=rss_bytes,
            )
        )
        with self._writes.begin() as session:
            result = session.execute(statement)
            assert isinstance(result, CursorResult)
            if result.rowcount == 0:
                raise StorageNotFound(f"no node {node_id!r}")

    def touch_nodes(self, seen: Mapping[str, NodeSeen]) -> None:
        rows = []
        for node_id, sighting in seen.items():
            _aware("seen_at", sighting.seen_at)
            _fits("current_task_id", sighting.current_task_id, schema.Node.current_task_id)
            if sighting.rss_bytes is not None and sighting.rss_bytes < 0:
                raise ValueError(f"rss_bytes must be >= 0, got {sighting.rss_bytes}")
            rows.append(
                {
                    "node": node_id,
                    "seen": sighting.seen_at,
                    "task": sighting.current_task_id,
                    "rss": sighting.rss_bytes,
                }
            )
        if not rows:
            return
        nodes = schema.Node.__table__
        assert isinstance(nodes, Table), "a declarative class maps one table"
        # One executemany of a plain UPDATE: a heartbeat batch is a single write transaction.
        statement = (
            update(nodes)
            .where(nodes.c.id == bindparam("node"))
            .values(
                last_seen_at=bindparam("seen", type_=nodes.c.last_seen_at.type),
                current_task_id=bindparam("task", type_=nodes.c.current_task_id.type),
                rss_bytes=bindparam("rss", type_=nodes.c.rss_bytes.type),
            )
        )
        with self._writes.begin() as session:
            session.connection().execute(statement, rows)

    def set_node_status(self, node_id: str, status: NodeStatus) -> NodeRecord:
        with self._writes.begin() as session:
            row = _locked(session, schema.Node, node_id, "node")
            row.status = status.value
            session.flush()
            return _node_record(row, _require(session, schema.Hardware, node_id, "hardware"))

    def update_hardware(self, node_id: str, hardware: Hardware, hardware_class: str) -> NodeRecord:
        if not hardware_class:
            raise ValueError("hardware_class must not be empty")
        with self._writes.begin() as session:
            row = _locked(session, schema.Node, node_id, "node")
            row.hardware_class = hardware_class
            hardware_row = session.merge(_hardware_row(node_id, hardware))
            session.flush()
            return _node_record(row, hardware_row)

    # Memory models.

    def put_memory_model(self, memory_model: NewMemoryModel) -> MemoryModelRecord:
        key = (memory_model.hardware_class, memory_model.model, memory_model.image_size)
        values = {
            "hardware_class": memory_model.hardware_class,
            "model": memory_model.model,
            "image_size": memory_model.image_size,
            "payload_json": memory_model.payload_json,
            "created_at": self._clock(),
        }
        # Two nodes of one class profiling at once both store their fit: the later one stays.
        statement = (
            self._dialect_insert()(schema.MemoryModel)
            .values(**values)
            .on_conflict_do_update(
                index_elements=["hardware_class", "model", "image_size"],
                set_={"payload_json": values["payload_json"], "created_at": values["created_at"]},
            )
        )
        with self._writes.begin() as session:
            session.execute(statement)
            found = session.scalars(_memory_model_query(*key)).one()
            return _memory_model_record(found)

    def get_memory_model(
        self, hardware_class: str, model: str, image_size: int
    ) -> MemoryModelRecord | None:
        with self._reads() as session:
            found = session.scalars(_memory_model_query(hardware_class, model, image_size)).first()
            return None if found is None else _memory_model_record(found)

    def list_memory_models(
        self, *, hardware_class: str | None = None
    ) -> Sequence[MemoryModelRecord]:
        query = select(schema.MemoryModel).order_by(
            schema.MemoryModel.hardware_class,
            schema.MemoryModel.model,
            schema.MemoryModel.image_size,
        )
        if hardware_class is not None:
            query = query.where(schema.MemoryModel.hardware_class == hardware_class)
        with self._reads() as session:
            return [_memory_model_record(found) for found in session.scalars(query)]

    # Jobs.

    def create_job(self, job: NewJob) -> JobRecord:
        now = self._clock()
        row = schema.Job(
            id=_new_id(),
            spec_json=job.spec_json,
            status=JobStatus.PENDING.value,
            created_at=now,
            finished_at=None,
            final_model_version=None,
            message="",
            updated_at=now,
        )
        with self._writes.begin() as session:
            session.add(row)
            session.flush()
            return _job_record(row)

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._reads() as session:
            found = session.get(schema.Job, job_id)
            return None if found is None else _job_record(found)

    def list_jobs(self, *, status: JobStatus | None = None) -> Sequence[JobRecord]:
        query = select(schema.Job).order_by(schema.Job.created_at.desc(), schema.Job.id)
        if status is not None:
            query = query.where(schema.Job.status == status.value)
        with self._reads() as session:
            return [_job_record(found) for found in session.scalars(query)]

    def update_job(
        self,
        job_id: str,
        *,
        status: JobStatus | None = None,
        expected_status: JobStatus | None = None,
        finished_at: datetime | None = None,
        final_model_version: int | None = None,
        message: str | None = None,
    ) -> JobRecord:
        _aware("finished_at", finished_at)
        with self._writes.begin() as session:
            row = _locked(session, schema.Job, job_id, "job")
            _check_status("job", job_id, row.status, expected_status)
            if status is not None:
                row.status = status.value
            if finished_at is not None:
                row.finished_at = finished_at
            if final_model_version is not None:
                row.final_model_version = final_model_version
            if message is not None:
                row.message = message
            row.updated_at = self._clock()
            session.flush()
            return _job_record(row)

    # Rounds.

    def create_round(self, round_: NewRound) -> RoundRecord:
        row = schema.Round(
            job_id=round_.job_id,
            number=round_.number,
            status=RoundStatus.OPEN.value,
            deadline_at=round_.deadline_at,
            started_at=self._clock(),
            finished_at=None,
            num_selected_nodes=round_.num_selected_nodes,
        )
        with self._writes.begin() as session:
            _require(session, schema.Job, round_.job_id, "job")
            _insert(session, row, f"job {round_.job_id} already has a round {round_.number}")
            return _round_record(row)

    def get_round(self, round_id: int) -> RoundRecord | None:
        with self._reads() as session:
            found = session.get(schema.Round, round_id)
            return None if found is None else _round_record(found)

    def get_round_by_number(self, job_id: str, number: int) -> RoundRecord | None:
        query = select(schema.Round).where(
            schema.Round.job_id == job_id, schema.Round.number == number
        )
        with self._reads() as session:
            found = session.scalars(query).first()
            return None if found is None else _round_record(found)

    def list_rounds(self, job_id: str) -> Sequence[RoundRecord]:
        query = (
            select(schema.Round).where(schema.Round.job_id == job_id).order_by(schema.Round.number)
        )
        with self._reads() as session:
            return [_round_record(found) for found in session.scalars(query)]

    def update_round(
        self,
        round_id: int,
        *,
        status: RoundStatus,
        expected_status: RoundStatus | None = None,
        finished_at: datetime | None = None,
        outcome: str | None = None,
        aggregation_s: float | None = None,
        num_updates: int | None = None,
    ) -> RoundRecord:
        _aware("finished_at", finished_at)
        _fits("outcome", outcome, schema.Round.outcome)
        if aggregation_s is not None and not (math.isfinite(aggregation_s) and aggregation_s >= 0):
            raise ValueError(f"aggregation_s must be finite and >= 0, got {aggregation_s}")
        if num_updates is not None and num_updates < 0:
            raise ValueError(f"num_updates must be >= 0, got {num_updates}")
        with self._writes.begin() as session:
            row = _locked(session, schema.Round, round_id, "round")
            _check_status("round", round_id, row.status, expected_status)
            row.status = status.value
            if finished_at is not None:
                row.finished_at = finished_at
            if outcome is not None:
                row.outcome = outcome
            if aggregation_s is not None:
                row.aggregation_s = aggregation_s
            if num_updates is not None:
                row.num_updates = num_updates
            session.flush()
            return _round_record(row)

    # Assignments.

    def create_assignment(self, assignment: NewAssignment) -> AssignmentRecord:
        row = schema.Assignment(
            round_id=assignment.round_id,
            node_id=assignment.node_id,
            batch_size=assignment.batch_size,
            accumulation_steps=assignment.accumulation_steps,
            schedule_json=assignment.schedule_json,
            predicted_peak_bytes=assignment.predicted_peak_bytes,
            status=AssignmentStatus.PENDING.value,
            created_at=self._clock(),
        )
        with self._writes.begin() as session:
            _require(session, schema.Round, assignment.round_id, "round")
            _require(session, schema.Node, assignment.node_id, "node")
            _insert(
                session,
                row,
                f"node {assignment.node_id} already has an assignment in round "
                f"{assignment.round_id}",
            )
            return _assignment_record(row)

    def get_assignment(self, assignment_id: int) -> AssignmentRecord | None:
        with self._reads() as session:
            found = session.get(schema.Assignment, assignment_id)
            return None if found is None else _assignment_record(found)

    def list_assignments(self, round_id: int) -> Sequence[AssignmentRecord]:
        query = (
            select(schema.Assignment)
            .where(schema.Assignment.round_id == round_id)
            .order_by(schema.Assignment.id)
        )
        with self._reads() as session:
            return [_assignment_record(found) for found in session.scalars(query)]

    def assignments_of_node(
        self, node_id: str, *, status: AssignmentStatus | None = None
    ) -> Sequence[AssignmentRecord]:
        query = (
            select(schema.Assignment)
            .where(schema.Assignment.node_id == node_id)
            .order_by(schema.Assignment.id)
        )
        if status is not None:
            query = query.where(schema.Assignment.status == status.value)
        with self._reads() as session:
            return [_assignment_record(found) for found in session.scalars(query)]

    def update_assignment_status(
        self, assignment_id: int, status: AssignmentStatus
    ) -> AssignmentRecord:
        with self._writes.begin() as session:
            row = _locked(session, schema.Assignment, assignment_id, "assignment")
            row.status = status.value
            session.flush()
            return _assignment_record(row)

    # Updates.

    def record_update(self, update: NewUpdate, *, completes: int | None = None) -> UpdateRecord:
        row = schema.Update(
            round_id=update.round_id,
            node_id=update.node_id,
            num_samples=update.num_samples,
            measured_peak_bytes=update.measured_peak_bytes,
            blob_digest=update.blob_digest,
            status=update.status.value,
            reason=update.reason,
            received_at=self._clock(),
            train_loss=update.train_loss,
            train_duration_s=update.train_duration_s,
        )
        with self._writes.begin() as session:
            _require(session, schema.Round, update.round_id, "round")
            _require(session, schema.Node, update.node_id, "node")
            _insert(
                session,
                row,
                f"duplicate update: node {update.node_id} already sent one for round "
                f"{update.round_id}",
            )
            if completes is not None:
                assignment = _locked(session, schema.Assignment, completes, "assignment")
                if (assignment.round_id, assignment.node_id) != (update.round_id, update.node_id):
                    raise ValueError(
                        f"assignment {completes} is not node {update.node_id}'s "
                        f"in round {update.round_id}"
                    )
                assignment.status = AssignmentStatus.DONE.value
            return _update_record(row)

    def list_updates(
        self, round_id: int, *, status: UpdateStatus | None = None
    ) -> Sequence[UpdateRecord]:
        query = (
            select(schema.Update)
            .where(schema.Update.round_id == round_id)
            .order_by(schema.Update.id)
        )
        if status is not None:
            query = query.where(schema.Update.status == status.value)
        with self._reads() as session:
            return [_update_record(found) for found in session.scalars(query)]

    # Model versions.

    def create_model_version(self, model_version: NewModelVersion) -> ModelVersionRecord:
        row = schema.ModelVersion(
            job_id=model_version.job_id,
            version=model_version.version,
            round_id=model_version.round_id,
            digest=model_version.digest,
            created_at=self._clock(),
        )
        with self._writes.begin() as session:
            _require(session, schema.Job, model_version.job_id, "job")
            if model_version.round_id is not None:
                _require(session, schema.Round, model_version.round_id, "round")
            _insert(
                session,
                row,
                f"job {model_version.job_id} already has a model version {model_version.version}",
            )
            return _model_version_record(row)

    def get_model_version(self, job_id: str, version: int) -> ModelVersionRecord | None:
        query = select(schema.ModelVersion).where(
            schema.ModelVersion.job_id == job_id, schema.ModelVersion.version == version
        )
        with self._reads() as session:
            found = session.scalars(query).first()
            return None if found is None else _model_version_record(found)

    def latest_model_version(self, job_id: str) -> ModelVersionRecord | None:
        query = (
            select(schema.ModelVersion)
            .where(schema.ModelVersion.job_id == job_id)
            .order_by(schema.ModelVersion.version.desc())
            .limit(1)
        )
        with self._reads() as session:
            found = session.scalars(query).first()
            return None if found is None else _model_version_record(found)

    def list_model_versions(self, job_id: str) -> Sequence[ModelVersionRecord]:
        query = (
            select(schema.ModelVersion)
            .where(schema.ModelVersion.job_id == job_id)
            .order_by(schema.ModelVersion.version)
        )
        with self._reads() as session:
            return [_model_version_record(found) for found in session.scalars(query)]

    # Events.

    def append_event(self, event: NewEvent) -> EventRecord:
        with self._writes.begin() as session:
            # Appenders to one job take turns on its row (SQLite: on the database's write lock),
            # so no two of them read the same largest sequence.
            _locked(session, schema.Job, event.job_id, "job")
            last = session.scalar(
                select(func.max(schema.Event.sequence)).where(schema.Event.job_id == event.job_id)
            )
            row = schema.Event(
                job_id=event.job_id,
                sequence=1 if last is None else last + 1,
                created_at=self._clock(),
                kind=event.kind,
                payload_json=event.payload_json,
            )
            session.add(row)
            session.flush()
            return _event_record(row)

    def list_events(
        self, job_id: str, *, after_sequence: int = 0, limit: int | None = None
    ) -> Sequence[EventRecord]:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        query = (
            select(schema.Event)
            .where(schema.Event.job_id == job_id, schema.Event.sequence > after_sequence)
            .order_by(schema.Event.sequence)
            .limit(limit)
        )
        with self._reads() as session:
            return [_event_record(found) for found in session.scalars(query)]

    # Profile tasks.

    def create_profile_task(self, task: NewProfileTask) -> ProfileTaskRecord:
        now = self._clock()
        row = schema.ProfileTask(
            id=_new_id(),
            node_id=task.node_id,
            job_id=task.job_id,
            hardware_class=task.hardware_class,
            model=task.model,
            image_size=task.image_size,
            batch_sizes_json=json.dumps(list(task.batch_sizes)),
            image_sizes_json=json.dumps(list(task.image_sizes)),
            status=ProfileTaskStatus.PENDING.value,
            message="",
            created_at=now,
            updated_at=now,
        )
        with self._writes.begin() as session:
            _require(session, schema.Node, task.node_id, "node")
            if task.job_id is not None:
                _require(session, schema.Job, task.job_id, "job")
            session.add(row)
            session.flush()
            return _profile_task_record(row)

    def get_profile_task(self, task_id: str) -> ProfileTaskRecord | None:
        with self._reads() as session:
            found = session.get(schema.ProfileTask, task_id)
            return None if found is None else _profile_task_record(found)

    def list_profile_tasks(
        self,
        *,
        node_id: str | None = None,
        hardware_class: str | None = None,
        model: str | None = None,
        image_size: int | None = None,
        status: ProfileTaskStatus | None = None,
    ) -> Sequence[ProfileTaskRecord]:
        query = select(schema.ProfileTask).order_by(
            schema.ProfileTask.created_at, schema.ProfileTask.id
        )
        if node_id is not None:
            query = query.where(schema.ProfileTask.node_id == node_id)
        if hardware_class is not None:
            query = query.where(schema.ProfileTask.hardware_class == hardware_class)
        if model is not None:
            query = query.where(schema.ProfileTask.model == model)
        if image_size is not None:
            query = query.where(schema.ProfileTask.image_size == image_size)
        if status is not None:
            query = query.where(schema.ProfileTask.status == status.value)
        with self._reads() as session:
            return [_profile_task_record(found) for found in session.scalars(query)]

    def update_profile_task(
        self,
        task_id: str,
        *,
        status: ProfileTaskStatus,
        expected_status: ProfileTaskStatus | None = None,
        message: str | None = None,
    ) -> ProfileTaskRecord:
        with self._writes.begin() as session:
            row = _locked(session, schema.ProfileTask, task_id, "profile task")
            _check_status("profile task", task_id, row.status, expected_status)
            row.status = status.value
            if message is not None:
                row.message = message
            row.updated_at = self._clock()
            session.flush()
            return _profile_task_record(row)

    # Node plans.

    def put_node_plan(self, plan: NewNodePlan) -> NodePlanRecord:
        values = {
            "job_id": plan.job_id,
            "node_id": plan.node_id,
            "fits": plan.fits,
            "plan_json": plan.plan_json,
            "budget_bytes": plan.budget_bytes,
            "shortfall_bytes": plan.shortfall_bytes,
            "message": plan.message,
            "oom_count": plan.oom_count,
            "updated_at": self._clock(),
        }
        statement = (
            self._dialect_insert()(schema.NodePlan)
            .values(**values)
            .on_conflict_do_update(
                index_elements=["job_id", "node_id"],
                set_={
                    key: value for key, value in values.items() if key not in ("job_id", "node_id")
                },
            )
        )
        with self._writes.begin() as session:
            _require(session, schema.Job, plan.job_id, "job")
            _require(session, schema.Node, plan.node_id, "node")
            session.execute(statement)
            found = session.scalars(_node_plan_query(plan.job_id, plan.node_id)).one()
            return _node_plan_record(found)

    def get_node_plan(self, job_id: str, node_id: str) -> NodePlanRecord | None:
        with self._reads() as session:
            found = session.scalars(_node_plan_query(job_id, node_id)).first()
            return None if found is None else _node_plan_record(found)

    def list_node_plans(
        self, *, job_id: str | None = None, node_id: str | None = None
    ) -> Sequence[NodePlanRecord]:
        query = select(schema.NodePlan).order_by(schema.NodePlan.job_id, schema.NodePlan.node_id)
        if job_id is not None:
            query = query.where(schema.NodePlan.job_id == job_id)
        if node_id is not None:
            query = query.where(schema.NodePlan.node_id == node_id)
        with self._reads() as session:
            return [_node_plan_record(found) for found in session.scalars(query)]


# Helpers: queries, checks and the ORM-to-record conversions (no ORM object leaves this module).


def _nodes() -> Select[schema.Node, schema.Hardware]:
    return (
        select(schema.Node, schema.Hardware)
        .join(schema.Hardware, schema.Hardware.node_id == schema.Node.id)
        .order_by(schema.Node.enrolled_at, schema.Node.id)
    )


def _memory_model_query(
    hardware_class: str, model: str, image_size: int
) -> Select[schema.MemoryModel]:
    return select(schema.MemoryModel).where(
        schema.MemoryModel.hardware_class == hardware_class,
        schema.MemoryModel.model == model,
        schema.MemoryModel.image_size == image_size,
    )


def _node_plan_query(job_id: str, node_id: str) -> Select[schema.NodePlan]:
    return select(schema.NodePlan).where(
        schema.NodePlan.job_id == job_id, schema.NodePlan.node_id == node_id
    )


def _require(session: Session, table: type[_Row], key: Any, what: str) -> _Row:
    row = session.get(table, key)
    if row is None:
        raise StorageNotFound(f"no {what} {key!r}")
    return row


def _locked(session: Session, table: type[_Row], key: Any, what: str) -> _Row:
    # FOR UPDATE on PostgreSQL; SQLite has no row locks but holds the database's write lock.
    row = session.get(table, key, with_for_update=True)
    if row is None:
        raise StorageNotFound(f"no {what} {key!r}")
    return row


def _check_status(what: str, key: Any, current: str, expected: Any) -> None:
    if expected is not None and current != expected.value:
        raise StorageConflict(f"{what} {key!r} is {current}, not {expected.value}")


def _insert(session: Session, row: schema.Base, conflict_message: str) -> None:
    # The referenced rows were checked first, so what fails here is a uniqueness constraint.
    session.add(row)
    try:
        session.flush()
    except IntegrityError as error:
        raise StorageConflict(conflict_message) from error


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")


def _fits(name: str, value: str | None, column: Any) -> None:
    # PostgreSQL refuses text longer than its column and SQLite keeps it: refuse it on both.
    length = column.type.length
    if value is not None and len(value) > length:
        raise ValueError(f"{name} must be at most {length} characters, got {len(value)}")


@overload
def _utc(value: datetime) -> datetime: ...
@overload
def _utc(value: None) -> None: ...
def _utc(value: datetime | None) -> datetime | None:
    # Rows just written hold the caller's datetimes, rows read back hold UTC: records hold UTC.
    return None if value is None else value.astimezone(UTC)


def _hardware_row(node_id: str, hardware: Hardware) -> schema.Hardware:
    return schema.Hardware(
        node_id=node_id,
        ram_bytes=hardware.ram_bytes,
        num_cores=hardware.num_cores,
        cpu_model=hardware.cpu_model,
        arch=hardware.arch,
        accelerator=hardware.accelerator,
        torch_version=hardware.torch_version,
        runtime_baseline_bytes=hardware.runtime_baseline_bytes,
        memory_budget_bytes=hardware.memory_budget_bytes,
        accelerator_memory_bytes=hardware.accelerator_memory_bytes,
    )


def _node_record(row: schema.Node, hardware: schema.Hardware) -> NodeRecord:
    return NodeRecord(
        id=row.id,
        name=row.name,
        hardware_class=row.hardware_class,
        credential_hash=row.credential_hash,
        enrolled_at=_utc(row.enrolled_at),
        last_seen_at=_utc(row.last_seen_at),
        status=NodeStatus(row.status),
        hardware=Hardware(
            ram_bytes=hardware.ram_bytes,
            num_cores=hardware.num_cores,
            cpu_model=hardware.cpu_model,
            arch=hardware.arch,
            accelerator=hardware.accelerator,
            torch_version=hardware.torch_version,
            runtime_baseline_bytes=hardware.runtime_baseline_bytes,
            memory_budget_bytes=hardware.memory_budget_bytes,
            accelerator_memory_bytes=hardware.accelerator_memory_bytes,
        ),
        agent_version=row.agent_version,
        current_task_id=row.current_task_id,
        rss_bytes=row.rss_bytes,
    )


def _memory_model_record(row: schema.MemoryModel) -> MemoryModelRecord:
    return MemoryModelRecord(
        hardware_class=row.hardware_class,
        model=row.model,
        image_size=row.image_size,
        payload_json=row.payload_json,
        created_at=_utc(row.created_at),
    )


def _job_record(row: schema.Job) -> JobRecord:
    return JobRecord(
        id=row.id,
        spec_json=row.spec_json,
        status=JobStatus(row.status),
        created_at=_utc(row.created_at),
        finished_at=_utc(row.finished_at),
        final_model_version=row.final_model_version,
        message=row.message,
        updated_at=_utc(row.updated_at),
    )


def _round_record(row: schema.Round) -> RoundRecord:
    return RoundRecord(
        id=row.id,
        job_id=row.job_id,
        number=row.number,
        status=RoundStatus(row.status),
        deadline_at=_utc(row.deadline_at),
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
        num_selected_nodes=row.num_selected_nodes,
        outcome=row.outcome,
        aggregation_s=row.aggregation_s,
        num_updates=row.num_updates,
    )


def _assignment_record(row: schema.Assignment) -> AssignmentRecord:
    return AssignmentRecord(
        id=row.id,
        round_id=row.round_id,
        node_id=row.node_id,
        batch_size=row.batch_size,
        accumulation_steps=row.accumulation_steps,
        schedule_json=row.schedule_json,
        predicted_peak_bytes=row.predicted_peak_bytes,
        status=AssignmentStatus(row.status),
        created_at=_utc(row.created_at),
    )


def _update_record(row: schema.Update) -> UpdateRecord:
    return UpdateRecord(
        id=row.id,
        round_id=row.round_id,
        node_id=row.node_id,
        num_samples=row.num_samples,
        measured_peak_bytes=row.measured_peak_bytes,
        blob_digest=row.blob_digest,
        status=UpdateStatus(row.status),
        reason=row.reason,
        received_at=_utc(row.received_at),
        train_loss=row.train_loss,
        train_duration_s=row.train_duration_s,
    )


def _model_version_record(row: schema.ModelVersion) -> ModelVersionRecord:
    return ModelVersionRecord(
        id=row.id,
        job_id=row.job_id,
        version=row.version,
        round_id=row.round_id,
        digest=row.digest,
        created_at=_utc(row.created_at),
    )


def _event_record(row: schema.Event) -> EventRecord:
    return EventRecord(
        id=row.id,
        job_id=row.job_id,
        sequence=row.sequence,
        created_at=_utc(row.created_at),
        kind=row.kind,
        payload_json=row.payload_json,
    )


def _profile_task_record(row: schema.ProfileTask) -> ProfileTaskRecord:
    return ProfileTaskRecord(
        id=row.id,
        node_id=row.node_id,
        job_id=row.job_id,
        hardware_class=row.hardware_class,
        model=row.model,
        image_size=row.image_size,
        batch_sizes=tuple(json.loads(row.batch_sizes_json)),
        image_sizes=tuple(json.loads(row.image_sizes_json)),
        status=ProfileTaskStatus(row.status),
        message=row.message,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def _node_plan_record(row: schema.NodePlan) -> NodePlanRecord:
    return NodePlanRecord(
        job_id=row.job_id,
        node_id=row.node_id,
        fits=row.fits,
        plan_json=row.plan_json,
        budget_bytes=row.budget_bytes,
        shortfall_bytes=row.shortfall_bytes,
        message=row.message,
        oom_count=row.oom_count,
        updated_at=_utc(row.updated_at),
    )


def _conforms_to_the_interface(storage: SqlStorage) -> Storage:
    # Never called: mypy checks here that SqlStorage has every method of Storage, with its types.
    return storage
