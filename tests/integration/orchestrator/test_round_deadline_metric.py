"""An open round's deadline is on the metrics endpoint while it is open, and only then."""

from __future__ import annotations

import time
from pathlib import Path

from protos.edgefleet.v1 import jobs_pb2
from tests.integration.orchestrator.fleet import (
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

_DEADLINE = "edgefleet_round_deadline_timestamp_seconds"


def test_the_open_rounds_deadline_is_exported_until_the_round_closes(tmp_path: Path) -> None:
    with coordinator(tmp_path, metrics_port=0) as fleet:
        port = server_of(fleet).metrics_port
        assert port is not None
        board = fleet.board("pi-1")
        submitted_at = time.time()
        job = fleet.submit(model_bytes(weights()), num_rounds=1, round_deadline_s=30)
        (task,) = pull_each([board])
        labels = {"job_id": job.job_id, "round": "0"}
        while_open = metric_value(port, _DEADLINE, labels)
        delta = constant_delta(0.5)
        train(board, task, delta)
        wait_for(lambda: fleet.get(job.job_id).state == jobs_pb2.JOB_STATE_SUCCEEDED, what="end")
        after = metric_value(port, _DEADLINE, labels)

    assert submitted_at + 30 <= while_open <= time.time() + 30
    assert after == 0.0  # absent once the round closed
