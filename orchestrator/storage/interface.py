"""What the coordinator asks of its registry; ``SqlStorage`` is the one implementation.

Records go in and out (``orchestrator.storage.records``), never ORM objects. Reads of one record
return ``None`` when it does not exist; writes that name a missing record raise
``StorageNotFound``; writes that contradict what is stored (a duplicate, a status that moved on)
raise ``StorageConflict``. Both are ``StorageError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

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


class Storage(Protocol):
    # Nodes and their hardware.
    def create_node(self, node: NewNode) -> NodeRecord: ...
    def get_node(self, node_id: str) -> NodeRecord | None: ...
    def list_nodes(self, *, hardware_class: str | None = None) -> Sequence[NodeRecord]: ...
    def nodes_seen_since(self, since: datetime) -> Sequence[NodeRecord]: ...
    def touch_node(
        self,
        node_id: str,
        seen_at: datetime | None = None,
        *,
        current_task_id: str | None = None,
        rss_bytes: int | None = None,
    ) -> None:
        """Record a heartbeat (``seen_at`` defaults to now) and what the node reported with it.

        ``current_task_id`` and ``rss_bytes`` are always written: ``None`` clears them, since a
        heartbeat that names no task means the node is idle now.
        """
        ...

    def touch_nodes(self, seen: Mapping[str, NodeSeen]) -> None:
        """``touch_node`` for many nodes in one transaction; nodes that do not exist are skipped."""
        ...

    def set_node_status(self, node_id: str, status: NodeStatus) -> NodeRecord: ...
    def update_hardware(
        self, node_id: str, hardware: Hardware, hardware_class: str
    ) -> NodeRecord: ...

    # Memory models, one per (hardware class, model, image size): a later fit replaces the earlier.
    def put_memory_model(self, memory_model: NewMemoryModel) -> MemoryModelRecord: ...
    def get_memory_model(
        self, hardware_class: str, model: str, image_size: int
    ) -> MemoryModelRecord | None: ...
    def list_memory_models(
        self, *, hardware_class: str | None = None
    ) -> Sequence[MemoryModelRecord]: ...

    # Jobs, newest first in lists.
    def create_job(self, job: NewJob) -> JobRecord: ...
    def get_job(self, job_id: str) -> JobRecord | None: ...
    def list_jobs(self, *, status: JobStatus | None = None) -> Sequence[JobRecord]: ...
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
        """Change the fields given; with ``expected_status``, only from that status.

        A job whose status is not ``expected_status`` raises ``StorageConflict`` (a cancel racing
        the last round, say). ``updated_at`` becomes now on every call.
        """
        ...

    # Rounds, by number within their job.
    def create_round(self, round_: NewRound) -> RoundRecord: ...
    def get_round(self, round_id: int) -> RoundRecord | None: ...
    def get_round_by_number(self, job_id: str, number: int) -> RoundRecord | None: ...
    def list_rounds(self, job_id: str) -> Sequence[RoundRecord]: ...
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
        """Like ``update_job``: the quorum and the deadline can race to close one round.

        Sets the fields given (not ``None``); the others keep what they hold.
        """
        ...

    # Assignments: one per (round, node).
    def create_assignment(self, assignment: NewAssignment) -> AssignmentRecord: ...
    def get_assignment(self, assignment_id: int) -> AssignmentRecord | None: ...
    def list_assignments(self, round_id: int) -> Sequence[AssignmentRecord]: ...
    def assignments_of_node(
        self, node_id: str, *, status: AssignmentStatus | None = None
    ) -> Sequence[AssignmentRecord]: ...
    def update_assignment_status(
        self, assignment_id: int, status: AssignmentStatus
    ) -> AssignmentRecord: ...

    # Updates: the first of a node in a round is the only one; a second raises StorageConflict.
    # ``completes``: the assignment the update answers, marked done in the same transaction.
    def record_update(self, update: NewUpdate, *, completes: int | None = None) -> UpdateRecord: ...
    def list_updates(
        self, round_id: int, *, status: UpdateStatus | None = None
    ) -> Sequence[UpdateRecord]: ...

    # Model versions: version N of a job is unique.
    def create_model_version(self, model_version: NewModelVersion) -> ModelVersionRecord: ...
    def get_model_version(self, job_id: str, version: int) -> ModelVersionRecord | None: ...
    def latest_model_version(self, job_id: str) -> ModelVersionRecord | None: ...
    def list_model_versions(self, job_id: str) -> Sequence[ModelVersionRecord]: ...

    # Events: a job's timeline, numbered 1, 2, 3, ... without gaps.
    def append_event(self, event: NewEvent) -> EventRecord:
        """Store ``event`` as its job's next one; concurrent appends get distinct sequences."""
        ...

    def list_events(
        self, job_id: str, *, after_sequence: int = 0, limit: int | None = None
    ) -> Sequence[EventRecord]:
        """The job's events with a sequence above ``after_sequence``, oldest first."""
        ...

    # Profile tasks: a node asked to measure a model, oldest first in lists.
    def create_profile_task(self, task: NewProfileTask) -> ProfileTaskRecord: ...
    def get_profile_task(self, task_id: str) -> ProfileTaskRecord | None: ...
    def list_profile_tasks(
        self,
        *,
        node_id: str | None = None,
        hardware_class: str | None = None,
        model: str | None = None,
        image_size: int | None = None,
        status: ProfileTaskStatus | None = None,
    ) -> Sequence[ProfileTaskRecord]: ...
    def update_profile_task(
        self,
        task_id: str,
        *,
        status: ProfileTaskStatus,
        expected_status: ProfileTaskStatus | None = None,
        message: str | None = None,
    ) -> ProfileTaskRecord:
        """Like ``update_round``; ``updated_at`` becomes now."""
        ...

    # Node plans: one per (job, node), a later plan replaces the earlier one.
    def put_node_plan(self, plan: NewNodePlan) -> NodePlanRecord: ...
    def get_node_plan(self, job_id: str, node_id: str) -> NodePlanRecord | None: ...
    def list_node_plans(
        self, *, job_id: str | None = None, node_id: str | None = None
    ) -> Sequence[NodePlanRecord]:
        """Ordered by (job id, node id)."""
        ...

    def close(self) -> None:
        """Release connections; the storage is not used afterwards."""
        ...
