"""Uploads beyond ``upload_concurrency`` wait for a slot, then go through; past the threads
uploads may hold, one is refused as busy while the other calls are still served."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from protos.edgefleet.v1 import common_pb2, fleet_pb2, jobs_pb2
from tests.integration.orchestrator.fleet import (
    HeldUpload,
    constant_delta,
    coordinator,
    metric_value,
    model_bytes,
    pull_each,
    server_of,
    train,
    wait_for,
    weights,
)


def test_an_upload_waits_while_the_only_slot_is_held_and_both_count(tmp_path: Path) -> None:
    with coordinator(tmp_path, upload_concurrency=1) as fleet:
        slow, fast = fleet.board("slow"), fleet.board("fast")
        job = fleet.submit(model_bytes(weights()), num_rounds=1, min_nodes=2)
        slow_task, fast_task = pull_each([slow, fast])
        held = HeldUpload(fleet, slow, slow_task, constant_delta(1.0))
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(train, fast, fast_task, constant_delta(3.0))
            finished_while_held = _done_within(waiting, 1.0)
            slow_verdict = held.finish()
            fast_verdict = waiting.result(timeout=20)
        wait_for(lambda: fleet.get(job.job_id).state == jobs_pb2.JOB_STATE_SUCCEEDED, what="end")
        final = fleet.get(job.job_id)

    assert not finished_while_held
    assert slow_verdict.accepted, slow_verdict.rejection.message
    assert fast_verdict.accepted, fast_verdict.rejection.message
    assert final.num_rounds_completed == 1


def test_an_upload_past_the_threads_uploads_may_hold_is_refused_busy_and_retried(
    tmp_path: Path,
) -> None:
    # 18 handler threads, 16 kept for the other calls: two uploads at a time, one receiving.
    with coordinator(tmp_path, handler_threads=18, upload_concurrency=1, metrics_port=0) as fleet:
        port = server_of(fleet).metrics_port
        assert port is not None
        boards = [fleet.board(f"board-{i}") for i in range(3)]
        job = fleet.submit(model_bytes(weights()), num_rounds=1, min_nodes=3)
        tasks = pull_each(boards)
        held = HeldUpload(fleet, boards[0], tasks[0], constant_delta(1.0))
        _wait_for_uploads(port, "receiving", 1)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(train, boards[1], tasks[1], constant_delta(2.0))
            _wait_for_uploads(port, "waiting", 1)
            with pytest.raises(grpc.RpcError) as refused:
                train(boards[2], tasks[2], constant_delta(3.0))
            heartbeat = boards[2].heartbeat()
            verdicts = [held.finish(), waiting.result(timeout=20)]
        verdicts.append(train(boards[2], tasks[2], constant_delta(3.0)))
        wait_for(lambda: fleet.get(job.job_id).state == jobs_pb2.JOB_STATE_SUCCEEDED, what="end")

    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "2 uploads in progress" in (refused.value.details() or "")
    assert heartbeat.next_heartbeat_s > 0
    assert [v.accepted for v in verdicts] == [True, True, True]


def _wait_for_uploads(metrics_port: int, state: str, count: int) -> None:
    labels = {"state": state}
    wait_for(
        lambda: metric_value(metrics_port, "edgefleet_uploads_in_progress", labels) == count,
        what=f"{count} upload(s) {state}",
    )


def _done_within(future: Future[fleet_pb2.UploadUpdateResponse], timeout_s: float) -> bool:
    try:
        future.exception(timeout=timeout_s)
    except TimeoutError:
        return False
    return True


def test_an_upload_that_outlives_its_round_is_late_and_the_round_keeps_what_it_had(
    tmp_path: Path,
) -> None:
    with coordinator(tmp_path) as fleet:
        slow, quick = fleet.board("slow"), fleet.board("quick")
        job = fleet.submit(model_bytes(weights()), num_rounds=1, min_nodes=2, round_deadline_s=2.0)
        slow_task, quick_task = pull_each([slow, quick])
        held = HeldUpload(fleet, slow, slow_task, constant_delta(1.0))
        quick_verdict = train(quick, quick_task, constant_delta(3.0))
        wait_for(lambda: fleet.get(job.job_id).state == jobs_pb2.JOB_STATE_SUCCEEDED, what="end")
        slow_verdict = held.finish()
        events = fleet.events(job.job_id)

    completed = next(e.round_completed for e in events if e.HasField("round_completed"))
    assert quick_verdict.accepted, quick_verdict.rejection.message
    assert not slow_verdict.accepted
    assert slow_verdict.rejection.code == common_pb2.ERROR_CODE_UPDATE_LATE
    assert completed.outcome == jobs_pb2.ROUND_OUTCOME_DEADLINE
    assert completed.num_updates == 1
