"""A round's data path for boards: global weights down, weight updates up.

An update is judged in this order, cheapest first, so that a late or duplicate update costs no
transfer: the task must be this node's assignment for the round it names; the round must still
be open (else late); the node must not have delivered already (else duplicate); then the chunks
are received and checksummed; then the update is checked against the round's global model (names,
shapes, dtypes; finite values). The verdict is recorded, under the round lock, before it is sent:
an acknowledged update is durable and counts even if the coordinator restarts right after.

For FedAvg the check and the aggregation share one read: the update is folded into the round's
running sum (``RunningSum``) as it is checked, before the round lock is taken, so closing the
round reads no update again and uploads do not queue behind each other's folds. The fold stays
pending until the verdict is recorded; it is counted under the round lock together with the
record, or taken back (late, duplicate, failed write). The stored update files stay the durable
record: a restarted coordinator (or a sum found wrong) rebuilds the sum from the updates the
registry holds accepted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from orchestrator import rounds
from orchestrator.aggregation import (
    AggregationRule,
    AlreadyFolded,
    Problem,
    RunningSum,
    SumClosed,
    Update,
    check_update,
)
from orchestrator.errors import ErrorCode, FleetError, RejectedUpdate, Rejection
from orchestrator.events import EventKind
from orchestrator.handlers.fleet import authenticate
from orchestrator.handlers.tasks import TRAIN_PREFIX
from orchestrator.handlers.transfers import (
    BlobHeader,
    OutgoingBlob,
    receive_blob,
    send_blob,
    starting_model,
)
from orchestrator.job_spec import JobSpec
from orchestrator.state import FleetState
from orchestrator.storage import StorageConflict
from orchestrator.storage.records import (
    AssignmentRecord,
    AssignmentStatus,
    ModelVersionRecord,
    NewUpdate,
    NodeRecord,
    RoundRecord,
    RoundStatus,
    UpdateStatus,
)

_SLACK_BYTES = 1 << 20
"""An update may exceed its global model by this much (safetensors headers differ in length)."""
_PROBLEMS = {
    Problem.SHAPE: Rejection.WRONG_SHAPE,
    Problem.NON_FINITE: Rejection.NON_FINITE,
    Problem.FORMAT: Rejection.BAD_FORMAT,
    Problem.SAMPLES: Rejection.WRONG_SHAPE,
}
_TRANSFER_ERRORS = {
    ErrorCode.CHECKSUM_MISMATCH: Rejection.CHECKSUM,
    ErrorCode.TOO_LARGE: Rejection.TOO_LARGE,
    ErrorCode.BAD_FORMAT: Rejection.BAD_FORMAT,
}


@dataclass(frozen=True)
class UpdateHeader:
    node_id: str
    task_id: str
    job_id: str
    round: int
    num_samples: int
    measured_peak_bytes: int
    train_loss: float
    train_duration_s: float
    blob: BlobHeader


@dataclass(frozen=True)
class UploadVerdict:
    rejection: RejectedUpdate | None
    received_bytes: int

    @property
    def accepted(self) -> bool:
        return self.rejection is None


def _assignment(
    state: FleetState, node: NodeRecord, header: UpdateHeader
) -> tuple[AssignmentRecord, RoundRecord] | None:
    suffix = header.task_id.removeprefix(TRAIN_PREFIX)
    if not header.task_id.startswith(TRAIN_PREFIX) or not suffix.isdigit():
        return None
    assignment = state.storage.get_assignment(int(suffix))
    if assignment is None or assignment.node_id != node.id:
        return None
    round_ = state.storage.get_round(assignment.round_id)
    if round_ is None or round_.job_id != header.job_id or round_.number != header.round:
        return None
    return assignment, round_


def _closed(state: FleetState, round_: RoundRecord) -> bool:
    return round_.status is not RoundStatus.OPEN or state.clock() >= round_.deadline_at


def upload_update(
    state: FleetState,
    credential: str,
    header: UpdateHeader,
    chunks: Iterable[tuple[int, bytes]],
) -> UploadVerdict:
    """Judge and record one upload; refused with ``BUSY`` when uploads hold every thread they
    may (each holds one while it waits for a slot, and the other calls need some)."""
    if not state.upload_admission.acquire(blocking=False):
        raise FleetError(
            ErrorCode.BUSY,
            f"{state.config.upload_threads} uploads in progress; retry after a backoff",
        )
    try:
        return _upload(state, credential, header, chunks)
    finally:
        state.upload_admission.release()


@contextmanager
def _upload_slot(state: FleetState) -> Iterator[None]:
    """One of the ``upload_concurrency`` slots, waited for; the wait shows in the metrics."""
    waiting = state.metrics.uploads_in_progress.labels("waiting")
    receiving = state.metrics.uploads_in_progress.labels("receiving")
    waiting.inc()
    try:
        state.upload_slots.acquire()
    finally:
        waiting.dec()
    receiving.inc()
    try:
        yield
    finally:
        receiving.dec()
        state.upload_slots.release()


class _Refused(Exception):
    """An upload turned away: recorded as a rejection event and answered as the verdict."""

    def __init__(self, reason: Rejection, message: str, round_: RoundRecord | None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.round_ = round_


@dataclass(frozen=True)
class _Admitted:
    """An upload's place: its node, assignment, open round, the model the round started from."""

    node: NodeRecord
    assignment: AssignmentRecord
    round_: RoundRecord
    base: ModelVersionRecord
    spec: JobSpec


@dataclass(frozen=True)
class _Received:
    """An upload stored and judged; under FedAvg folded into ``running``, pending until the
    verdict is recorded (``None`` for the coordinate-wise rules, which read it at the end)."""

    digest: str
    verdict: RejectedUpdate | None
    running: RunningSum | None


def _upload(
    state: FleetState,
    credential: str,
    header: UpdateHeader,
    chunks: Iterable[tuple[int, bytes]],
) -> UploadVerdict:
    """Admit the upload, receive (and fold) it, record the verdict: each step may refuse it."""
    node = authenticate(state, header.node_id, credential)
    if header.num_samples < 1:
        raise FleetError(ErrorCode.INVALID_REQUEST, "must be at least 1", "header.num_samples")
    try:
        admitted = _admit(state, node, header)
        received = _receive(state, admitted, header, chunks)
        wake = _record(state, admitted, header, received)
    except _Refused as refused:
        return _reject(state, refused.round_, node, header, refused.reason, refused.message)
    round_ = admitted.round_
    _announce(
        state, round_, node, header, received.verdict, admitted.assignment.predicted_peak_bytes
    )
    if received.verdict is None and header.measured_peak_bytes:
        state.metrics.measured_peak.labels(round_.job_id, node.id, node.hardware_class).set(
            header.measured_peak_bytes
        )
    if wake:
        state.wake.set()
    return UploadVerdict(received.verdict, header.blob.total_bytes)


def _admit(state: FleetState, node: NodeRecord, header: UpdateHeader) -> _Admitted:
    """The upload's assignment in an open round it has not delivered to yet; else refused."""
    found = _assignment(state, node, header)
    if found is None:
        raise _Refused(
            Rejection.NOT_ASSIGNED,
            f"{header.task_id!r} is not "
            f"this node's task for round {header.round} of job {header.job_id}",
            None,
        )
    assignment, round_ = found
    if _closed(state, round_):
        raise _Refused(Rejection.LATE, "the round has closed", round_)
    # A recorded update marks its assignment done (a race past this is a StorageConflict later).
    if assignment.status is AssignmentStatus.DONE:
        raise _Refused(Rejection.DUPLICATE, "this node already delivered", round_)
    base = starting_model(state, round_.job_id, round_.number)
    spec = rounds.job_spec(state.storage, round_.job_id)
    return _Admitted(node, assignment, round_, base, spec)


def _receive(
    state: FleetState,
    admitted: _Admitted,
    header: UpdateHeader,
    chunks: Iterable[tuple[int, bytes]],
) -> _Received:
    """Store the update's bytes (checked against its header), then judge it: under FedAvg by
    folding it into the round's running sum, else by checking it against the model."""
    node, round_ = admitted.node, admitted.round_
    max_bytes = state.model_store.size_bytes(admitted.base.digest) + _SLACK_BYTES
    running = None
    # Uploads beyond the slots wait here, before reading their streams: a burst of a hundred
    # went faster a few at a time than all at once (config.upload_concurrency).
    with _upload_slot(state):
        try:
            digest = receive_blob(state, header.blob, chunks, max_bytes=max_bytes, kind="update")
        except FleetError as exc:
            reason = _TRANSFER_ERRORS.get(exc.code)
            if reason is None:
                raise
            raise _Refused(reason, exc.public_message, round_) from None
        base_path = state.model_store.path(admitted.base.digest)
        update = Update(state.model_store.path(digest), header.num_samples)
        if admitted.spec.aggregation is AggregationRule.FEDAVG:
            # FedAvg reads the update once: checked and folded into the round's running sum
            # together, outside the round lock (the sum has its own), pending until recorded.
            with state.round_lock:
                # Closed while this upload arrived: its sum may be gone, and rebuilding one for
                # a closed round would read every update of it again for nothing.
                if _closed(state, _current(state, round_)):
                    raise _Refused(Rejection.LATE, "the round has closed", round_)
                running = rounds.round_sum(
                    state.storage, state.model_store, state.sums, round_.id, base_path
                )
            try:
                problem = running.fold(node.id, update)
            except SumClosed:
                raise _Refused(Rejection.LATE, "the round has closed", round_) from None
            except AlreadyFolded:
                raise _Refused(Rejection.DUPLICATE, "this node already delivered", round_) from None
        else:
            # The coordinate-wise rules read every update again at aggregation.
            problem = check_update(base_path, update)
    verdict = None if problem is None else RejectedUpdate(_PROBLEMS[problem[0]], problem[1])
    return _Received(digest, verdict, running)


def _record(
    state: FleetState, admitted: _Admitted, header: UpdateHeader, received: _Received
) -> bool:
    """Record the verdict and settle the fold under the round lock (closing the round sees both
    or neither); whether the conductor should look at the round now."""
    node, round_, running = admitted.node, admitted.round_, received.running
    pending = running is not None and received.verdict is None
    try:
        with state.round_lock:
            current = _current(state, round_)
            if _closed(state, current):
                raise _Refused(Rejection.LATE, "the round has closed", current)
            recorded = _recorded(
                state, admitted.assignment, node, header, received.digest, received.verdict
            )
            if not recorded:
                raise _Refused(Rejection.DUPLICATE, "this node already delivered", round_)
            if running is not None and pending:
                running.settle(node.id, keep=True)
                pending = False
            accepted = None if running is None else len(running.keys)
            return _may_close(state, current, admitted.spec, accepted)
    finally:
        if running is not None and pending:
            running.settle(node.id, keep=False)


def _current(state: FleetState, round_: RoundRecord) -> RoundRecord:
    current = state.storage.get_round(round_.id)
    assert current is not None, "rounds are never deleted while their job exists"
    return current


def _recorded(
    state: FleetState,
    assignment: AssignmentRecord,
    node: NodeRecord,
    header: UpdateHeader,
    digest: str,
    verdict: RejectedUpdate | None,
) -> bool:
    """Record the verdict and complete the assignment in one transaction; False: a duplicate."""
    try:
        state.storage.record_update(
            NewUpdate(
                round_id=assignment.round_id,
                node_id=node.id,
                num_samples=header.num_samples,
                measured_peak_bytes=header.measured_peak_bytes or None,
                blob_digest=digest,
                status=UpdateStatus.ACCEPTED if verdict is None else UpdateStatus.REJECTED,
                reason=None if verdict is None else verdict.reason.value,
                train_loss=header.train_loss if math.isfinite(header.train_loss) else None,
                train_duration_s=_non_negative(header.train_duration_s),
            ),
            completes=assignment.id,
        )
    except StorageConflict:
        return False
    return True


def _may_close(state: FleetState, round_: RoundRecord, spec: JobSpec, accepted: int | None) -> bool:
    """Whether the conductor should look now: the round may have reached its quorum or heard
    from every board. ``accepted``: the count the caller knows (a running sum's), else queried.

    Waking it on every update cost a full look at the job per upload. The conductor still ticks
    every ``tick_s``, which catches the rarer endings this misses (every board answered, some
    with a rejected update or a reported failure).
    """
    quorum = min(spec.min_nodes, max(round_.num_selected_nodes, 1))
    if accepted is None:
        updates = state.storage.list_updates(round_.id)
        accepted = sum(1 for update in updates if update.status is UpdateStatus.ACCEPTED)
        if len(updates) >= round_.num_selected_nodes:
            return True
    return accepted >= quorum or accepted >= round_.num_selected_nodes


def _non_negative(value: float) -> float | None:
    """A board's own figure, kept only when it makes sense (it never fails the upload)."""
    return value if math.isfinite(value) and value >= 0 else None


def _reject(
    state: FleetState,
    round_: RoundRecord | None,
    node: NodeRecord,
    header: UpdateHeader,
    reason: Rejection,
    message: str,
) -> UploadVerdict:
    verdict = RejectedUpdate(reason, message)
    if round_ is not None:
        _announce(state, round_, node, header, verdict)
    else:
        state.metrics.updates.labels("rejected", reason.value).inc()
    return UploadVerdict(verdict, 0)


def _announce(
    state: FleetState,
    round_: RoundRecord,
    node: NodeRecord,
    header: UpdateHeader,
    verdict: RejectedUpdate | None,
    predicted_peak_bytes: int = 0,
) -> None:
    accepted = verdict is None
    state.metrics.updates.labels(
        "accepted" if accepted else "rejected", "" if verdict is None else verdict.reason.value
    ).inc()
    payload: dict[str, object] = {
        "round": round_.number,
        "node_id": node.id,
        "accepted": accepted,
        "num_samples": header.num_samples,
        "measured_peak_bytes": header.measured_peak_bytes,
        "predicted_peak_bytes": predicted_peak_bytes,
        "train_loss": header.train_loss if math.isfinite(header.train_loss) else 0.0,
    }
    if verdict is not None:
        payload["reason"] = verdict.reason.value
        payload["message"] = verdict.message
    state.events.append(round_.job_id, EventKind.UPDATE_RECEIVED, payload)


def download_weights(
    state: FleetState,
    node_id: str,
    credential: str,
    job_id: str,
    round_number: int,
    max_chunk_bytes: int,
) -> OutgoingBlob:
    """The global weights round ``round_number`` of ``job_id`` starts from, for a selected node."""
    node = authenticate(state, node_id, credential)
    round_ = state.storage.get_round_by_number(job_id, round_number) if job_id else None
    if round_ is None:
        raise FleetError(ErrorCode.UNKNOWN_ROUND, f"job {job_id!r} has no round {round_number}")
    if not any(a.node_id == node.id for a in state.storage.list_assignments(round_.id)):
        raise FleetError(
            ErrorCode.NOT_ASSIGNED, f"round {round_number} of job {job_id} did not select it"
        )
    weights = starting_model(state, job_id, round_number)
    return send_blob(state, weights.digest, max_chunk_bytes, "weights")
