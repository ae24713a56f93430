"""A simulated board of the aggregation bench retries an upload refused as busy, as agents do."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgefleet.fleet_bench.update_client import upload_until_taken
from tests.integration.orchestrator.fleet import (
    HeldUpload,
    constant_delta,
    coordinator,
    metric_value,
    model_bytes,
    pull_each,
    server_of,
    wait_for,
    weights,
)


def test_a_board_refused_as_busy_uploads_again_after_a_backoff(tmp_path: Path) -> None:
    # 17 handler threads, 16 kept for other calls: one upload at a time, none waiting.
    with coordinator(tmp_path, handler_threads=17, upload_concurrency=1, metrics_port=0) as fleet:
        port = server_of(fleet).metrics_port
        assert port is not None
        first, second = fleet.board("first"), fleet.board("second")
        fleet.submit(model_bytes(weights()), num_rounds=1, min_nodes=2)
        first_task, second_task = pull_each([first, second])
        held = HeldUpload(fleet, first, first_task, constant_delta(1.0))
        second.download_weights(second_task.train.job_id, second_task.train.round)
        train = second_task.train
        messages = second.update_messages(
            second_task.task_id,
            train.job_id,
            train.round,
            model_bytes(constant_delta(2.0)),
            num_samples=8,
        )
        refused = {"method": "UploadUpdate", "code": "UNAVAILABLE"}
        with ThreadPoolExecutor(1) as pool:
            later = pool.submit(upload_until_taken, second, messages, 30.0)
            wait_for(lambda: metric_value(port, "edgefleet_rpc_requests_total", refused) >= 1)
            first_verdict = held.finish()
            second_verdict, refusals = later.result(timeout=30)

    assert first_verdict.accepted, first_verdict.rejection.message
    assert second_verdict.accepted, second_verdict.rejection.message
    assert refusals >= 1
