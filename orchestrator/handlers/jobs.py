"""What the jobs service does for operators, independent of gRPC."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

from orchestrator.errors import ErrorCode, FleetError
from orchestrator.events import EventKind
from orchestrator.handlers.transfers import BlobHeader, OutgoingBlob, receive_blob, send_blob
from orchestrator.job_spec import JobSpec, JobSpecError
from orchestrator.state import FleetState
from orchestrator.storage import StorageConflict
from orchestrator.storage.records import (
    EventRecord,
    JobRecord,
    JobStatus,
    MemoryModelRecord,
    NewJob,
    NewModelVersion,
    NodePlanRecord,
    NodeRecord,
    ProfileTaskRecord,
    ProfileTaskStatus,
    RoundStatus,
)

MAX_MODEL_BYTES = 4 << 30
"""Largest weights file an operator may upload (a safetensors file of a student model)."""
_WATCH_POLL_S = 1.0


def check_admin(state: FleetState, token: str) -> None:
    if not hmac.compare_digest(token, state.config.admin_token):
        raise FleetError(ErrorCode.BAD_ADMIN_TOKEN)


def upload_weights(
    state: FleetState, header: BlobHeader, chunks: Iterable[tuple[int, bytes]]
) -> str:
    """Store a job's starting weights; the digest is what a job spec names."""
    return receive_blob(state, header, chunks, max_bytes=MAX_MODEL_BYTES, kind="weights")


def submit(state: FleetState, spec_data: dict[str, object]) -> tuple[JobRecord, JobSpec]:
    """Validate and record a job; it waits in ``pending`` until enough boards are planned."""
    try:
        spec = JobSpec.from_dict(spec_data)
    except JobSpecError as exc:
        raise FleetError(ErrorCode.INVALID_JOB, str(exc)) from None
    digest = spec.initial_weights_sha256_hex
    if not digest:
        raise FleetError(
            ErrorCode.INVALID_JOB,
            "initial_weights_sha256_hex: missing; upload the student's weights first",
            "spec.initial_weights_sha256_hex",
        )
    if not state.model_store.exists(digest):
        raise FleetError(
            ErrorCode.INVALID_JOB,
            f"initial_weights_sha256_hex: no uploaded weights {digest}",
            "spec.initial_weights_sha256_hex",
        )
    record = state.storage.create_job(NewJob(spec_json=json.dumps(spec.to_dict())))
    state.storage.create_model_version(
        NewModelVersion(job_id=record.id, version=0, round_id=None, digest=digest)
    )
    state.events.append(record.id, EventKind.STATE_CHANGED, {"state": record.status.value})
    state.wake.set()
    return record, spec


def get(state: FleetState, job_id: str) -> JobRecord:
    record = state.storage.get_job(job_id) if job_id else None
    if record is None:
        raise FleetError(ErrorCode.UNKNOWN_JOB, job_id or "job_id is required")
    return record


@dataclass(frozen=True)
class JobProgress:
    record: JobRecord
    current_round: int
    rounds_completed: int
    model_sha256_hex: str


def progress(state: FleetState, record: JobRecord) -> JobProgress:
    rounds = state.storage.list_rounds(record.id)
    completed = sum(1 for round_ in rounds if round_.status is RoundStatus.COMPLETED)
    current = rounds[-1].number if rounds else 0
    if rounds and rounds[-1].status.is_terminal and not record.status.is_terminal:
        current += 1
    latest = state.storage.latest_model_version(record.id)
    return JobProgress(record, current, completed, latest.digest if latest else "")


def page(
    state: FleetState, status: JobStatus | None, page_size: int, page_token: str
) -> tuple[Sequence[JobRecord], str]:
    """One page of jobs, newest first; the token is the offset of the next page."""
    if page_token and not page_token.isdigit():
        raise FleetError(ErrorCode.INVALID_REQUEST, f"page_token {page_token!r} is not ours")
    start = int(page_token or 0)
    size = page_size or 100
    records = state.storage.list_jobs(status=status)
    chosen = records[start : start + size]
    following = start + size
    return chosen, str(following) if following < len(records) else ""


def cancel(state: FleetState, job_id: str, reason: str = "") -> JobRecord:
    """Stop a job: no round starts, the open one is abandoned; agents learn it by heartbeat."""
    record = get(state, job_id)
    if record.status.is_terminal:
        raise FleetError(ErrorCode.JOB_NOT_CANCELLABLE, f"job {job_id} is {record.status.value}")
    message = reason[:1000] or "cancelled by an operator"
    with state.round_lock:
        try:
            cancelled = state.storage.update_job(
                job_id,
                status=JobStatus.CANCELLED,
                expected_status=record.status,
                finished_at=state.clock(),
                message=message,
            )
        except StorageConflict:
            # Its state moved on meanwhile (a round finished it): report what it is now.
            raise FleetError(
                ErrorCode.JOB_NOT_CANCELLABLE, f"job {job_id} changed state; get it again"
            ) from None
        for round_ in state.storage.list_rounds(job_id):
            if round_.status is RoundStatus.OPEN:
                state.storage.update_round(
                    round_.id,
                    status=RoundStatus.FAILED,
                    expected_status=RoundStatus.OPEN,
                    finished_at=state.clock(),
                    outcome="cancelled",
                )
    state.events.append(
        job_id, EventKind.STATE_CHANGED, {"state": JobStatus.CANCELLED.value, "message": message}
    )
    return cancelled


def watch(state: FleetState, job_id: str, after_sequence: int) -> Iterator[EventRecord]:
    """The job's events after ``after_sequence``, then new ones, until the job has finished.

    The stream ends with the event of the job's terminal state (the last event a job gets), or
    at once for a watcher that already saw it.
    """
    get(state, job_id)
    sent = after_sequence
    while True:
        generation = state.events.generation
        for event in state.storage.list_events(job_id, after_sequence=sent):
            sent = event.sequence
            yield event
            if _ends_job(event):
                return
        if get(state, job_id).status.is_terminal and any(
            _ends_job(event) and event.sequence <= sent
            for event in state.storage.list_events(job_id)
        ):
            return
        state.events.wait(generation, _WATCH_POLL_S)


def _ends_job(event: EventRecord) -> bool:
    if event.kind != EventKind.STATE_CHANGED.value:
        return False
    return JobStatus(json.loads(event.payload_json)["state"]).is_terminal


def download_model(
    state: FleetState, job_id: str, version: int | None, max_chunk_bytes: int
) -> tuple[int, OutgoingBlob]:
    """A job's model version (the latest when ``version`` is None) as a header and chunks."""
    get(state, job_id)
    if version is None:
        record = state.storage.latest_model_version(job_id)
    else:
        record = state.storage.get_model_version(job_id, version)
    if record is None:
        raise FleetError(ErrorCode.UNKNOWN_MODEL, f"job {job_id} has no model version {version}")
    return record.version, send_blob(state, record.digest, max_chunk_bytes, "model")


@dataclass(frozen=True)
class ModelStatus:
    model: str
    image_size: int
    state: str
    """``missing``, ``profiling``, ``ready`` or ``failed``."""
    message: str = ""


@dataclass(frozen=True)
class NodeView:
    node: NodeRecord
    alive: bool
    models: Sequence[ModelStatus]
    plans: Sequence[NodePlanRecord]


def _model_status(
    hardware_class: str,
    model: str,
    image_size: int,
    fitted: dict[tuple[str, str, int], MemoryModelRecord],
    tasks: Sequence[ProfileTaskRecord],
) -> ModelStatus:
    if (hardware_class, model, image_size) in fitted:
        return ModelStatus(model, image_size, "ready")
    mine = [
        task
        for task in tasks
        if (task.hardware_class, task.model, task.image_size) == (hardware_class, model, image_size)
    ]
    if any(not task.status.is_terminal for task in mine):
        return ModelStatus(model, image_size, "profiling")
    failed = [task for task in mine if task.status is ProfileTaskStatus.FAILED]
    if failed:
        return ModelStatus(model, image_size, "failed", failed[-1].message)
    return ModelStatus(model, image_size, "missing")


def nodes(state: FleetState, hardware_class: str) -> list[NodeView]:
    """Every node (of one hardware class, if given): liveness, memory models, active plans."""
    cutoff = state.clock() - timedelta(seconds=state.config.heartbeat_timeout_s)
    # Heartbeats are buffered; an operator's listing shows the latest ones.
    state.seen.flush(state.storage)
    records = state.storage.list_nodes(hardware_class=hardware_class or None)
    active = [job for job in state.storage.list_jobs() if not job.status.is_terminal]
    wanted: list[tuple[str, int]] = []
    for job in active:
        spec = JobSpec.from_stored(job.spec_json)
        for model in (spec.student, spec.teacher):
            if model is not None and (model, spec.image_size) not in wanted:
                wanted.append((model, spec.image_size))
    fitted = {
        (record.hardware_class, record.model, record.image_size): record
        for record in state.storage.list_memory_models()
    }
    tasks = state.storage.list_profile_tasks()
    active_ids = {job.id for job in active}
    plans = [plan for plan in state.storage.list_node_plans() if plan.job_id in active_ids]
    views = []
    for node in records:
        shown = [
            (m.model, m.image_size)
            for m in fitted.values()
            if m.hardware_class == node.hardware_class
        ]
        pairs = list(dict.fromkeys([*wanted, *shown]))
        views.append(
            NodeView(
                node=node,
                alive=node.last_seen_at >= cutoff,
                models=[
                    _model_status(node.hardware_class, model, size, fitted, tasks)
                    for model, size in pairs
                ],
                plans=[plan for plan in plans if plan.node_id == node.id],
            )
        )
    return views
