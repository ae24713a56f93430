"""Prometheus metrics of the coordinator, on a registry of its own.

RPC counts and latencies come from an interceptor; the fleet's state (nodes by hardware class
and liveness, jobs by state) is read from the registry at scrape time, so it is right after a
restart too.
"""

from __future__ import annotations

import functools
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator.interceptors import BehaviourInterceptor
from orchestrator.storage import Storage
from orchestrator.storage.records import JobStatus

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
        states = Tally(job.status for job in self._storage.list_jobs())
        for state in JobStatus:
            jobs.add_metric([state.value], states.get(state, 0))
        yield jobs


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
