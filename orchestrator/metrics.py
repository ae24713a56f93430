"""Prometheus metrics of the coordinator, on a registry of its own.

RPC counts and latencies come from an interceptor; rounds, updates, bytes and failures are counted
where they happen; the fleet's state (nodes by hardware class and liveness, jobs by state, each
node's plan) is read from the registry at scrape time, so it is right after a restart too.
"""

from __future__ import annotations

import functools
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator.errors import Rejection
from orchestrator.interceptors import BehaviourInterceptor
from orchestrator.planning import StoredPlan
from orchestrator.storage import Storage
from orchestrator.storage.records import JobStatus, RoundStatus

_ROUND_BUCKETS_S = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class _FleetCollector(Collector):
    def __init__(self, storage: Storage, heartbeat_timeout_s: float) -> None:
        self._storage = storage
        self._timeout_s = heartbeat_timeout_s

    def collect(self) -> Iterable[GaugeMetricFamily]:
        nodes = GaugeMetricFamily(
            "edgefleet_nodes",
            "Registered nodes by hardware class and liveness (seen within the heartbeat timeout).",
            labels=["hardware_class", "live"],
        )
        cutoff = datetime.now(UTC) - timedelta(seconds=self._timeout_s)
        tally = Tally(
            (node.hardware_class, "true" if node.last_seen_at >= cutoff else "false")
            for node in self._storage.list_nodes()
        )
        for (hardware_class, live), count in sorted(tally.items()):
            nodes.add_metric([hardware_class, live], count)
        yield nodes
        jobs = GaugeMetricFamily("edgefleet_jobs", "Jobs by state.", labels=["state"])
        records = self._storage.list_jobs()
        states = Tally(job.status for job in records)
        for state in JobStatus:
            jobs.add_metric([state.value], states.get(state, 0))
        yield jobs
        yield self._deadlines([job.id for job in records if job.status is JobStatus.RUNNING])
        yield from self._plans({job.id for job in records if not job.status.is_terminal})

    def _deadlines(self, running_jobs: list[str]) -> GaugeMetricFamily:
        # The conductor closes a round at its deadline at the latest: one still open well past
        # it means the conductor is stuck, which an alert can now see directly.
        deadlines = GaugeMetricFamily(
            "edgefleet_round_deadline_timestamp_seconds",
            "Deadline of each running job's open round (Unix time).",
            labels=["job_id", "round"],
        )
        for job_id in running_jobs:
            rounds = self._storage.list_rounds(job_id)
            if rounds and rounds[-1].status is RoundStatus.OPEN:
                open_round = rounds[-1]
                deadlines.add_metric(
                    [job_id, str(open_round.number)], open_round.deadline_at.timestamp()
                )
        return deadlines

    def _plans(self, active_jobs: set[str]) -> Iterator[GaugeMetricFamily]:
        labels = ["job_id", "node_id", "hardware_class"]
        batch = GaugeMetricFamily(
            "edgefleet_planned_batch_size",
            "Batch size planned for each node of each active job (0: nothing fits).",
            labels=labels,
        )
        predicted = GaugeMetricFamily(
            "edgefleet_predicted_peak_bytes",
            "Predicted peak resident memory of each node's training process, per active job.",
            labels=labels,
        )
        budget = GaugeMetricFamily(
            "edgefleet_memory_budget_bytes",
            "The memory budget each node's plan was made for, per active job.",
            labels=labels,
        )
        classes = {node.id: node.hardware_class for node in self._storage.list_nodes()}
        for plan in self._storage.list_node_plans():
            if plan.job_id not in active_jobs:
                continue
            key = [plan.job_id, plan.node_id, classes.get(plan.node_id, "")]
            stored = StoredPlan.from_json(plan.plan_json) if plan.plan_json else None
            batch.add_metric(key, stored.batch_size if stored else 0)
            predicted.add_metric(key, stored.predicted_peak_bytes if stored else 0)
            budget.add_metric(key, plan.budget_bytes)
        yield batch
        yield predicted
        yield budget


class FleetMetrics:
    def __init__(self, storage: Storage, heartbeat_timeout_s: float) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgefleet_rpc_requests",
            "RPCs handled, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgefleet_rpc_duration_seconds",
            "RPC handling time, by method.",
            ["method"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.rounds = Counter(
            "edgefleet_rounds_completed",
            "Rounds closed, by outcome (quorum, all_reported, deadline, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.round_duration = Histogram(
            "edgefleet_round_duration_seconds",
            "From a round's start to its new global model.",
            buckets=_ROUND_BUCKETS_S,
            registry=self.registry,
        )
        self.updates = Counter(
            "edgefleet_updates",
            "Updates received, by result (accepted, rejected) and rejection reason.",
            ["result", "reason"],
            registry=self.registry,
        )
        self.bytes_received = Counter(
            "edgefleet_received_bytes",
            "Bytes received in chunk streams, by what they carried (update, weights).",
            ["kind"],
            registry=self.registry,
        )
        self.bytes_sent = Counter(
            "edgefleet_sent_bytes",
            "Bytes sent in chunk streams, by what they carried (weights, model).",
            ["kind"],
            registry=self.registry,
        )
        self.aggregation = Histogram(
            "edgefleet_aggregation_seconds",
            "Time to aggregate one round's updates into the next global model.",
            buckets=_ROUND_BUCKETS_S,
            registry=self.registry,
        )
        self.failures = Counter(
            "edgefleet_node_failures",
            "Task failures reported by nodes, by hardware class and kind (out_of_memory, ...).",
            ["hardware_class", "kind"],
            registry=self.registry,
        )
        self.measured_peak = Gauge(
            "edgefleet_measured_peak_bytes",
            "Peak resident memory each node measured in its last accepted update.",
            ["job_id", "node_id", "hardware_class"],
            registry=self.registry,
        )
        self.uploads_in_progress = Gauge(
            "edgefleet_uploads_in_progress",
            "Uploads holding a handler thread: receiving (in one of the upload_concurrency "
            "slots) or waiting for a slot.",
            ["state"],
            registry=self.registry,
        )
        self.uploads_in_progress.labels("receiving")
        self.uploads_in_progress.labels("waiting")
        # Every series exists from the start at zero, so that rate() and increase() see the first
        # rejection of a kind as a rise, not as a series appearing.
        self.updates.labels("accepted", "")
        for rejection in Rejection:
            self.updates.labels("rejected", rejection.value)
        self.registry.register(_FleetCollector(storage, heartbeat_timeout_s))


def _observed(
    metrics: FleetMetrics, behaviour: Callable[..., Any], method: str, streaming: bool
) -> Callable[..., Any]:
    def record(context: grpc.ServicerContext, started: float) -> None:
        code = context.code() or grpc.StatusCode.OK
        metrics.requests.labels(method, code.name).inc()
        metrics.latency.labels(method).observe(time.perf_counter() - started)

    if streaming:

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            try:
                yield from behaviour(request, context)
            finally:
                record(context, started)

        return stream

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            return behaviour(request, context)
        finally:
            record(context, started)

    return unary


class MetricsInterceptor(BehaviourInterceptor):
    """Counts and times every RPC; placed outside the error interceptor to see final codes."""

    def __init__(self, metrics: FleetMetrics) -> None:
        super().__init__(functools.partial(_observed, metrics))
