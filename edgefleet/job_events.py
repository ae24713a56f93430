"""A job's events in words, for the operators' commands and the demo's progress lines."""

from __future__ import annotations

from protos.edgefleet.v1 import common_pb2, fleet_pb2, jobs_pb2


def describe(event: jobs_pb2.JobEvent) -> str:
    """One line for an operator: what happened to the job."""
    kind = event.WhichOneof("event")
    if kind == "state_changed":
        state = jobs_pb2.JobState.Name(event.state_changed.state).removeprefix("JOB_STATE_")
        note = f" ({event.state_changed.message})" if event.state_changed.message else ""
        return f"job {state.lower()}{note}"
    if kind == "round_started":
        started = event.round_started
        return f"round {started.round} started with {len(started.node_ids)} boards"
    if kind == "update_received":
        update = event.update_received
        if update.accepted:
            return f"round {update.round}: update from {update.node_id} accepted"
        code = common_pb2.ErrorCode.Name(update.rejection.code).removeprefix("ERROR_CODE_")
        return (
            f"round {update.round}: update from {update.node_id} rejected "
            f"({code.lower()}: {update.rejection.message})"
        )
    if kind == "round_completed":
        done = event.round_completed
        outcome = jobs_pb2.RoundOutcome.Name(done.outcome).removeprefix("ROUND_OUTCOME_")
        return (
            f"round {done.round} closed ({outcome.lower()}): {done.num_updates} updates, "
            f"{done.duration_s:.1f} s, aggregation {done.aggregation_s:.2f} s"
        )
    failed = event.node_failed
    what = fleet_pb2.FailureKind.Name(failed.kind).removeprefix("FAILURE_KIND_")
    return f"round {failed.round}: {failed.node_id} failed ({what.lower()}: {failed.message})"
