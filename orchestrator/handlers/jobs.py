"""What the jobs service does for operators, independent of gRPC."""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from orchestrator.errors import ErrorCode, FleetError
from orchestrator.handlers.fleet import FleetState
from orchestrator.job_spec import JobSpec, JobSpecError
from orchestrator.storage import StorageConflict
from orchestrator.storage.records import (
    JobRecord,
    JobStatus,
    MemoryModelRecord,
    NewJob,
    NodeRecord,
)


def check_admin(state: FleetState, token: str) -> None:
    if not hmac.compare_digest(token, state.config.admin_token):
        raise FleetError(ErrorCode.BAD_ADMIN_TOKEN)


def submit(state: FleetState, spec_data: dict[str, object]) -> tuple[JobRecord, JobSpec]:
    """Validate and record a job; it waits in ``pending`` for rounds to start it."""
    try:
        spec = JobSpec.from_dict(spec_data)
    except JobSpecError as exc:
        raise FleetError(ErrorCode.INVALID_JOB, str(exc)) from None
    record = state.storage.create_job(NewJob(spec_json=json.dumps(spec.to_dict())))
    return record, spec


def get(state: FleetState, job_id: str) -> JobRecord:
    record = state.storage.get_job(job_id) if job_id else None
    if record is None:
        raise FleetError(ErrorCode.UNKNOWN_JOB, job_id or "job_id is required")
    return record


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


def cancel(state: FleetState, job_id: str) -> JobRecord:
    record = get(state, job_id)
    if record.status.is_terminal:
        raise FleetError(ErrorCode.JOB_NOT_CANCELLABLE, f"job {job_id} is {record.status.value}")
    try:
        return state.storage.update_job(
            job_id,
            status=JobStatus.CANCELLED,
            expected_status=record.status,
            finished_at=datetime.now(UTC),
        )
    except StorageConflict:
        # Its state moved on meanwhile (a round finished it): report what it is now.
        raise FleetError(
            ErrorCode.JOB_NOT_CANCELLABLE, f"job {job_id} changed state; get it again"
        ) from None


def nodes(
    state: FleetState, hardware_class: str
) -> list[tuple[NodeRecord, Sequence[MemoryModelRecord], bool]]:
    """Every node (of one hardware class, if given), its class's memory models, and liveness."""
    cutoff = datetime.now(UTC) - timedelta(seconds=state.config.heartbeat_timeout_s)
    records = state.storage.list_nodes(hardware_class=hardware_class or None)
    models: dict[str, Sequence[MemoryModelRecord]] = {}
    listed = []
    for node in records:
        if node.hardware_class not in models:
            models[node.hardware_class] = state.storage.list_memory_models(
                hardware_class=node.hardware_class
            )
        listed.append((node, models[node.hardware_class], node.last_seen_at >= cutoff))
    return listed
