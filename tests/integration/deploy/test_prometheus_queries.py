"""Every PromQL expression of the dashboard and the alert rules, evaluated by a real Prometheus
that scrapes a real coordinator during a small job, through Prometheus' HTTP API.

The job: two boards train round 1 of two (updates accepted, weights down, updates up), one
sends its update again after the round closed (rejected, late) and reports running out of
memory; a wrong enrollment token is refused. Every dashboard expression then returns data,
except those that are empty in a healthy fleet (lost nodes), whose series must exist; every
alert evaluates without error (none is expected to fire bar the rejection rate), its series
exist, and Prometheus' own rule evaluation reports each rule healthy.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from node_agent.client import FleetClient
from protos.edgefleet.v1 import fleet_pb2
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
from tests.unit.deploy.sources import (
    ALERTS,
    alert_expressions,
    dashboard_expressions,
    metric_names,
)

pytestmark = needs_prometheus
# Empty while every board is live: the expression must still evaluate, and its series exist.
EMPTY_WHEN_HEALTHY = {"Lost nodes by hardware class / A"}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with coordinator(tmp_path / "coordinator", metrics_port=0) as running_fleet:
        yield running_fleet


@pytest.fixture
def prometheus(tmp_path: Path, fleet: Fleet) -> Iterator[str]:
    with running_prometheus(tmp_path, server_of(fleet).metrics_port, (ALERTS,)) as base:
        yield base


def _get(base: str, path: str, **parameters: str) -> Any:
    url = f"{base}{path}?" + urllib.parse.urlencode(parameters)
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            payload = json.load(response)
    except urllib.error.HTTPError as error:  # a bad expression is answered 400 with the reason
        payload = json.load(error)
    assert payload["status"] == "success", f"{parameters}: {payload}"
    return payload["data"]


def _query(base: str, expression: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = _get(base, "/api/v1/query", query=expression)["result"]
    return result


def _eventually(base: str, expression: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        result = _query(base, expression)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"no data for {expression} within {timeout_s} s")
        time.sleep(0.5)


def _ready(base: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _small_job(fleet: Fleet) -> None:
    boards = [fleet.board(f"pi-{i}") for i in range(2)]
    with pytest.raises(grpc.RpcError):
        FleetClient(fleet.channel).register("wrong-token", hardware(400 * MIB))
    job = fleet.submit(model_bytes(weights()), min_nodes=2, num_rounds=2)
    tasks = pull_each(boards)
    for board, task in zip(boards, tasks, strict=True):
        assert train(board, task, weights(seed=1, scale=0.01)).accepted
    wait_for(lambda: fleet.get(job.job_id).num_rounds_completed == 1, what="round 1 closed")
    late = train(boards[0], tasks[0], weights(seed=2, scale=0.01))
    assert not late.accepted
    boards[1].report_failure(
        tasks[1].task_id,
        fleet_pb2.FAILURE_KIND_OUT_OF_MEMORY,
        "killed at 410 MiB",
        job_id=job.job_id,
        round_number=tasks[1].train.round,
        observed_peak_bytes=410 * MIB,
    )


def test_every_dashboard_and_alert_expression_evaluates_on_a_real_job(
    fleet: Fleet, prometheus: str
) -> None:
    _ready(prometheus)
    _small_job(fleet)
    # The last things the job did, once scraped twice (rates need two samples).
    _eventually(prometheus, 'changes(edgefleet_updates_total{result="rejected"}[1m]) >= 0')
    _eventually(prometheus, "count_over_time(edgefleet_node_failures_total[1m]) >= 2")

    with_data = {
        name: _eventually(prometheus, expression)
        for name, expression in dashboard_expressions().items()
        if name not in EMPTY_WHEN_HEALTHY
    }
    empty_when_healthy = {
        name: _query(prometheus, expression)
        for name, expression in dashboard_expressions().items()
        if name in EMPTY_WHEN_HEALTHY
    }
    alerts = {name: _query(prometheus, expr) for name, expr in alert_expressions().items()}
    series = {
        name: _eventually(prometheus, name)
        for expression in [*alert_expressions().values(), *dashboard_expressions().values()]
        for name in metric_names(expression)
    }

    assert all(with_data.values())
    assert empty_when_healthy == {name: [] for name in EMPTY_WHEN_HEALTHY}
    assert all(series.values())
    for name in ("EdgefleetCoordinatorDown", "EdgefleetNodesLost", "EdgefleetRoundStalled"):
        assert alerts[name] == [], name
    assert alerts["EdgefleetRepeatedOutOfMemory"] == []  # one report, not three
    nodes = with_data["Live nodes by hardware class / A"]
    assert [(n["metric"]["hardware_class"], n["value"][1]) for n in nodes] == [("pi", "2")]
    batch = with_data["Planned batch size per node / A"]
    measured = with_data["Predicted vs measured peak memory per node / B"]
    assert len(_node_ids(batch)) == 2
    assert _node_ids(batch) == _node_ids(measured)
    assert all(float(point["value"][1]) > 0 for point in batch)
    updates = {
        (point["metric"]["result"], point["metric"].get("reason", ""))
        for point in _query(prometheus, "edgefleet_updates_total > 0")
    }
    # Every (result, reason) series exists from the start at zero; these two counted.
    assert updates == {("accepted", ""), ("rejected", "late")}
    failures = _query(prometheus, "edgefleet_node_failures_total")
    assert [(f["metric"]["hardware_class"], f["metric"]["kind"]) for f in failures] == [
        ("pi", "out_of_memory")
    ]


def _node_ids(points: list[dict[str, Any]]) -> set[str]:
    return {str(point["metric"]["node_id"]) for point in points}


def test_prometheus_evaluates_every_alert_rule_without_error(fleet: Fleet, prometheus: str) -> None:
    _ready(prometheus)
    fleet.board("pi-0")

    deadline = time.monotonic() + 30
    while True:
        groups = _get(prometheus, "/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        evaluated = [r for r in rules if not r["lastEvaluation"].startswith("0001-")]
        if len(evaluated) == len(rules) == len(alert_expressions()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    assert {rule["name"] for rule in evaluated} == set(alert_expressions())
    for rule in evaluated:
        assert rule["health"] == "ok", rule
        assert rule.get("lastError", "") == "", rule
