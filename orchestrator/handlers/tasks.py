"""What a board asks for between rounds: its next task, and where its profiles and failures go.

A board pulls; the coordinator never calls it. The next task is, in this order: the train task of
an open round it was selected for, then a profile task the conductor gave it, else nothing (with
when to ask again). Task ids name their kind and record: ``train-<assignment id>``,
``profile-<profile task id>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.errors import ErrorCode, FleetError
from orchestrator.events import EventKind
from orchestrator.handlers.fleet import authenticate
from orchestrator.handlers.transfers import starting_model
from orchestrator.job_spec import JobSpec
from orchestrator.outcomes import FailureKind
from orchestrator.planning import (
    MemoryModelPayload,
    ProfileRejected,
    ProfileSample,
    StoredPlan,
    fit_profiles,
)
from orchestrator.state import FleetState
from orchestrator.storage import StorageConflict
from orchestrator.storage.records import (
    AssignmentRecord,
    AssignmentStatus,
    JobStatus,
    NewMemoryModel,
    NewNodePlan,
    NodeRecord,
    ProfileTaskRecord,
    ProfileTaskStatus,
    RoundRecord,
    RoundStatus,
)

TRAIN_PREFIX = "train-"
PROFILE_PREFIX = "profile-"
_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class TrainTask:
    task_id: str
    job_id: str
    round: int
    spec: JobSpec
    assignment: AssignmentRecord
    weights_sha256_hex: str
    round_record: RoundRecord

    @property
    def plan(self) -> StoredPlan:
        """Assignments hold the whole plan they were made from (``schedule_json``)."""
        return StoredPlan.from_json(self.assignment.schedule_json)


@dataclass(frozen=True)
class ProfileTask:
    task_id: str
    record: ProfileTaskRecord
    num_classes: int
    calibrate: bool
    """The job's student: the board also measures its allocator overhead while training."""


@dataclass(frozen=True)
class NoTask:
    retry_after_s: float


Task = TrainTask | ProfileTask | NoTask


def _open_train_task(state: FleetState, node: NodeRecord) -> TrainTask | None:
    now = state.clock()
    for status in (AssignmentStatus.SENT, AssignmentStatus.PENDING):
        for assignment in state.storage.assignments_of_node(node.id, status=status):
            round_ = state.storage.get_round(assignment.round_id)
            if round_ is None or round_.status is not RoundStatus.OPEN or now >= round_.deadline_at:
                continue
            job = state.storage.get_job(round_.job_id)
            if job is None or job.status is not JobStatus.RUNNING:
                continue
            if status is AssignmentStatus.PENDING:
                # Before the write: a heartbeat racing it must not settle the board as idle.
                state.idle_beats.wake(node.id)
                assignment = state.storage.update_assignment_status(
                    assignment.id, AssignmentStatus.SENT
                )
            spec = JobSpec.from_stored(job.spec_json)
            weights = starting_model(state, job.id, round_.number)
            return TrainTask(
                task_id=f"{TRAIN_PREFIX}{assignment.id}",
                job_id=job.id,
                round=round_.number,
                spec=spec,
                assignment=assignment,
                weights_sha256_hex=weights.digest,
                round_record=round_,
            )
    return None


def _open_profile_task(state: FleetState, node: NodeRecord) -> ProfileTask | None:
    for status in (ProfileTaskStatus.SENT, ProfileTaskStatus.PENDING):
        for task in state.storage.list_profile_tasks(node_id=node.id, status=status):
            if status is ProfileTaskStatus.PENDING:
                try:
                    task = state.storage.update_profile_task(
                        task.id,
                        status=ProfileTaskStatus.SENT,
                        expected_status=ProfileTaskStatus.PENDING,
                    )
                except StorageConflict:
                    continue
            spec = _spec_of(state, task.job_id)
            return ProfileTask(
                task_id=f"{PROFILE_PREFIX}{task.id}",
                record=task,
                num_classes=spec.num_classes if spec else JobSpec.num_classes,
                calibrate=spec is not None and spec.student == task.model,
            )
    return None


def _spec_of(state: FleetState, job_id: str | None) -> JobSpec | None:
    job = state.storage.get_job(job_id) if job_id else None
    return JobSpec.from_stored(job.spec_json) if job else None


def pull_task(state: FleetState, node_id: str, credential: str) -> Task:
    """The node's next task; pulling also counts as a heartbeat of an idle node."""
    node = authenticate(state, node_id, credential)
    state.seen.record(node.id, state.clock())
    if not state.idle_pulls.is_idle(node.id):
        epoch = state.idle_pulls.epoch()
        task: Task | None = _open_train_task(state, node) or _open_profile_task(state, node)
        if task is not None:
            return task
        state.idle_pulls.settle(node.id, epoch)
    return NoTask(retry_after_s=state.config.idle_pull_interval_s)


def _profile_task_of(state: FleetState, node: NodeRecord, task_id: str) -> ProfileTaskRecord:
    record = None
    if task_id.startswith(PROFILE_PREFIX):
        record = state.storage.get_profile_task(task_id.removeprefix(PROFILE_PREFIX))
    if record is None or record.node_id != node.id:
        raise FleetError(ErrorCode.UNKNOWN_TASK, f"no profile task {task_id!r} for this node")
    return record


@dataclass(frozen=True)
class ProfileUpload:
    task_id: str
    model_name: str
    parameter_bytes: int
    buffer_bytes: int
    num_classes: int
    samples: Sequence[ProfileSample]
    allocator_overhead_fraction: float | None
    """None: the board did not measure it (the coordinator's default applies)."""
    allocator_overhead_bytes: int
    model_library_bytes: int = 0


_MAX_LIBRARY_BYTES = 1 << 36
"""No library a board imports comes near 64 GiB: a larger figure is a broken or hostile board."""


def upload_profile(
    state: FleetState, node_id: str, credential: str, upload: ProfileUpload
) -> str | None:
    """Fit and store the memory model of the node's class; the reason when it cannot be fitted."""
    node = authenticate(state, node_id, credential)
    task = _profile_task_of(state, node, upload.task_id)
    if task.status is ProfileTaskStatus.DONE:
        return None
    if upload.model_name != task.model:
        raise FleetError(
            ErrorCode.INVALID_REQUEST,
            f"the task profiles {task.model!r}, not {upload.model_name!r}",
            "model_name",
        )
    fraction = upload.allocator_overhead_fraction
    if fraction is not None and not 0 <= fraction < 1:
        raise FleetError(
            ErrorCode.INVALID_REQUEST,
            "must be in [0, 1)",
            "allocator_overhead_fraction",
        )
    if upload.model_library_bytes > _MAX_LIBRARY_BYTES:
        raise FleetError(
            ErrorCode.INVALID_REQUEST,
            f"must be at most {_MAX_LIBRARY_BYTES}",
            "model_library_bytes",
        )
    wanted = [(batch, size) for batch in task.batch_sizes for size in task.image_sizes]
    try:
        model = fit_profiles(
            task.model,
            upload.samples,
            upload.parameter_bytes,
            upload.buffer_bytes,
            upload.num_classes,
            wanted,
        )
    except ProfileRejected as exc:
        state.storage.update_profile_task(
            task.id, status=ProfileTaskStatus.FAILED, message=str(exc)[:_MESSAGE_CHARS]
        )
        state.wake.set()
        return str(exc)
    payload = MemoryModelPayload(
        model,
        upload.allocator_overhead_fraction,
        upload.allocator_overhead_bytes,
        upload.model_library_bytes,
    )
    state.storage.put_memory_model(
        NewMemoryModel(
            hardware_class=task.hardware_class,
            model=task.model,
            image_size=task.image_size,
            payload_json=payload.to_json(),
        )
    )
    state.storage.update_profile_task(task.id, status=ProfileTaskStatus.DONE)
    state.wake.set()
    return None


@dataclass(frozen=True)
class FailureReport:
    task_id: str
    kind: FailureKind
    observed_peak_bytes: int
    message: str


def report_failure(
    state: FleetState, node_id: str, credential: str, report: FailureReport
) -> float:
    """Record a failed task (out of memory: re-plan the node with less); return retry-after."""
    node = authenticate(state, node_id, credential)
    message = report.message[:_MESSAGE_CHARS]
    state.metrics.failures.labels(node.hardware_class, report.kind.value).inc()
    if report.task_id.startswith(PROFILE_PREFIX):
        task = _profile_task_of(state, node, report.task_id)
        if not task.status.is_terminal:
            state.storage.update_profile_task(
                task.id, status=ProfileTaskStatus.FAILED, message=f"{report.kind.value}: {message}"
            )
        if task.job_id is not None:
            _node_failed(state, task.job_id, 0, node, report, message)
    else:
        assignment = None
        if (
            report.task_id.startswith(TRAIN_PREFIX)
            and report.task_id[len(TRAIN_PREFIX) :].isdigit()
        ):
            assignment = state.storage.get_assignment(int(report.task_id[len(TRAIN_PREFIX) :]))
        if assignment is None or assignment.node_id != node.id:
            raise FleetError(ErrorCode.UNKNOWN_TASK, f"no task {report.task_id!r} for this node")
        round_ = state.storage.get_round(assignment.round_id)
        assert round_ is not None, "an assignment's round exists (cascading delete)"
        if assignment.status in (AssignmentStatus.PENDING, AssignmentStatus.SENT):
            state.storage.update_assignment_status(assignment.id, AssignmentStatus.FAILED)
        _node_failed(state, round_.job_id, round_.number, node, report, message)
        if report.kind is FailureKind.OUT_OF_MEMORY:
            _count_out_of_memory(state, round_.job_id, node.id)
    state.wake.set()
    return state.config.idle_pull_interval_s


def _node_failed(
    state: FleetState,
    job_id: str,
    round_number: int,
    node: NodeRecord,
    report: FailureReport,
    message: str,
) -> None:
    state.events.append(
        job_id,
        EventKind.NODE_FAILED,
        {
            "round": round_number,
            "node_id": node.id,
            "kind": report.kind.value,
            "message": message,
            "observed_peak_bytes": report.observed_peak_bytes,
        },
    )


def _count_out_of_memory(state: FleetState, job_id: str, node_id: str) -> None:
    """The conductor re-plans a node whose out-of-memory count changed, with less budget."""
    plan = state.storage.get_node_plan(job_id, node_id)
    if plan is None:
        return
    state.storage.put_node_plan(
        NewNodePlan(
            job_id=job_id,
            node_id=node_id,
            fits=plan.fits,
            plan_json=plan.plan_json,
            budget_bytes=plan.budget_bytes,
            shortfall_bytes=plan.shortfall_bytes,
            message=plan.message,
            oom_count=plan.oom_count + 1,
        )
    )
