"""A real Prometheus scrapes a real coordinator; its HTTP API returns the fleet's metrics."""

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from node_agent.client import FleetClient
from protos.edgefleet.v1 import jobs_pb2
from tests.integration.orchestrator.fleet import (
    MIB,
    Fleet,
    coordinator,
    hardware,
    model_bytes,
    pull_each,
    server_of,
    train,
    wait_for,
    weights,
)
from tests.integration.prometheus_server import needs_prometheus, running_prometheus

pytestmark = needs_prometheus


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with coordinator(tmp_path / "coordinator", metrics_port=0) as running_fleet:
        yield running_fleet


@pytest.fixture
def prometheus(tmp_path: Path, fleet: Fleet) -> Iterator[str]:
    with running_prometheus(tmp_path, server_of(fleet).metrics_port, ()) as base:
        yield base


def _query(base: str, expression: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as response:
        payload = json.load(response)
    assert payload["status"] == "success", payload
    result: list[dict[str, object]] = payload["data"]["result"]
    return result


def _eventually(base: str, expression: str, timeout_s: float = 60) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = _query(base, expression)
            if result:
                return result
        except OSError:
            pass  # Prometheus is still starting
        if time.monotonic() > deadline:
            raise AssertionError(f"no data for {expression} within {timeout_s} s")
        time.sleep(0.5)


def test_prometheus_scrapes_nodes_jobs_rounds_and_rpcs(fleet: Fleet, prometheus: str) -> None:
    boards = [fleet.board(f"pi-{i}") for i in range(2)]
    with pytest.raises(grpc.RpcError):
        FleetClient(fleet.channel).register("wrong-token", hardware(400 * MIB))
    job = fleet.submit(model_bytes(weights()), min_nodes=2, num_rounds=1)
    for board, task in zip(boards, pull_each(boards), strict=True):
        assert train(board, task, weights(seed=1, scale=0.01)).accepted
    pending = fleet.submit(model_bytes(weights()), min_nodes=3)
    wait_for(lambda: fleet.get(job.job_id).state == jobs_pb2.JOB_STATE_SUCCEEDED, what="end")

    nodes = _eventually(prometheus, 'edgefleet_nodes{live="true"}')
    waiting = _eventually(prometheus, 'edgefleet_jobs{state="pending"} > 0')
    rounds = _eventually(prometheus, 'edgefleet_rounds_completed_total{outcome="quorum"}')
    accepted = _eventually(prometheus, 'edgefleet_updates_total{result="accepted"}')
    received = _eventually(prometheus, 'edgefleet_received_bytes_total{kind="update"} > 0')
    planned = _eventually(prometheus, "edgefleet_planned_batch_size > 0")
    refused = _eventually(
        prometheus, 'edgefleet_rpc_requests_total{method="Register",code="UNAUTHENTICATED"}'
    )
    latency = _eventually(
        prometheus,
        "histogram_quantile(0.99, sum by (le) (rate(edgefleet_rpc_duration_seconds_bucket[1m])))",
    )

    assert nodes[0]["metric"]["hardware_class"] == "pi"  # type: ignore[index]
    assert nodes[0]["value"][1] == "2"  # type: ignore[index]
    assert waiting[0]["value"][1] == "1"  # type: ignore[index]
    assert rounds[0]["value"][1] == "1"  # type: ignore[index]
    assert accepted[0]["value"][1] == "2"  # type: ignore[index]
    assert received
    assert {p["metric"]["job_id"] for p in planned} == {pending.job_id}  # type: ignore[index]
    assert refused[0]["value"][1] == "1"  # type: ignore[index]
    assert latency
