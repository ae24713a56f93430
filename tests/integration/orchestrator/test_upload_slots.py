"""Uploads beyond ``upload_concurrency`` wait for a slot, then go through; none is lost."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgefleet.transfer import blob_info
from protos.edgefleet.v1 import common_pb2, fleet_pb2, fleet_pb2_grpc, jobs_pb2
from tests.integration.orchestrator.fleet import (
    coordinator,
    model_bytes,
    pull_each,
    train,
    wait_for,
    weights,
)


def _delta(value: float) -> dict[str, np.ndarray]:
    return {k: np.full_like(v, value) if v.dtype.kind == "f" else v for k, v in weights().items()}


def test_an_upload_waits_while_the_only_slot_is_held_and_both_count(tmp_path: Path) -> None:
    with coordinator(tmp_path, upload_concurrency=1) as fleet:
        slow, fast = fleet.board("slow"), fleet.board("fast")
        job = fleet.submit(model_bytes(weights()), num_rounds=1, min_nodes=2)
        slow_task, fast_task = pull_each([slow, fast])
        slow.download_weights(slow_task.train.job_id, slow_task.train.round)
        data = model_bytes(_delta(1.0))
        header = fleet_pb2.UpdateHeader(
            node_id=slow.node_id,
            task_id=slow_task.task_id,
            job_id=slow_task.train.job_id,
            round=slow_task.train.round,
            num_samples=8,
            blob=blob_info(data),
        )
        first_chunk_sent, go_on = threading.Event(), threading.Event()

        def held_upload() -> Iterator[fleet_pb2.UploadUpdateRequest]:
            yield fleet_pb2.UploadUpdateRequest(header=header)
            yield fleet_pb2.UploadUpdateRequest(
                chunk=common_pb2.Chunk(offset_bytes=0, data=data[:100])
            )
            first_chunk_sent.set()
            go_on.wait(30)
            yield fleet_pb2.UploadUpdateRequest(
                chunk=common_pb2.Chunk(offset_bytes=100, data=data[100:])
            )

        stub = fleet_pb2_grpc.FleetServiceStub(fleet.channel)
        held = stub.UploadUpdate.future(
            held_upload(), metadata=[("authorization", f"Bearer {slow.credential}")]
        )
        assert first_chunk_sent.wait(10)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(train, fast, fast_task, _delta(3.0))
            finished_while_held = _done_within(waiting, 1.0)
            go_on.set()
            slow_verdict = held.result(timeout=20)
            fast_verdict = waiting.result(timeout=20)
        wait_for(lambda: fleet.get(job.job_id).state == jobs_pb2.JOB_STATE_SUCCEEDED, what="end")
        final = fleet.get(job.job_id)

    assert not finished_while_held
    assert slow_verdict.accepted, slow_verdict.rejection.message
    assert fast_verdict.accepted, fast_verdict.rejection.message
    assert final.num_rounds_completed == 1


def _done_within(future: Future[fleet_pb2.UploadUpdateResponse], timeout_s: float) -> bool:
    try:
        future.exception(timeout=timeout_s)
    except TimeoutError:
        return False
    return True
