"""``edgefleet bench fleet-api``: latency of the agents' routine calls with a large idle fleet.

A real coordinator runs as its own process; a few load processes (``api_client``) register N
boards between them (not timed), then for ``seconds`` every board heartbeats and pulls at the
cadence the coordinator tells it, starting at a random phase. The latency of every Heartbeat and
PullTask call is measured on the client side; percentiles are nearest-rank over all calls
answered, and ``errors`` counts the calls that failed.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgefleet.fleet_bench.api_client import HEARTBEAT, PULL_TASK
from edgefleet.fleet_bench.coordinator_process import ENROLLMENT_ENV, Tokens, running_coordinator
from edgefleet.fleet_bench.proc import machine_cpu_s
from edgefleet.fleet_bench.processes import BenchError, ChildGroup
from edgefleet.progress import Report

NODES_PER_PROCESS = 500
"""Boards one load process drives: a few hundred keep an asyncio loop far from saturated."""
HARDWARE_CLASS = "api-bench-board"
_DRAIN_S = 60.0


@dataclass(frozen=True)
class FleetApiBenchConfig:
    nodes: int
    seconds: float = 30.0
    processes: int | None = None
    """Load processes; None: one per ``NODES_PER_PROCESS`` boards."""
    setup_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"nodes must be at least 1, got {self.nodes}")
        if not self.seconds > 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}")
        if self.processes is not None and not 1 <= self.processes <= self.nodes:
            raise ValueError(
                f"processes must be from 1 to the number of nodes ({self.nodes}), "
                f"got {self.processes}"
            )
        if not self.setup_timeout_s > 0:
            raise ValueError(f"setup_timeout_s must be positive, got {self.setup_timeout_s}")

    @property
    def num_processes(self) -> int:
        return self.processes or math.ceil(self.nodes / NODES_PER_PROCESS)


@dataclass(frozen=True)
class LatencySummary:
    requests: int
    p50_ms: float | None
    """None when no call was answered (JSON has no NaN)."""
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, latencies_ms: list[float]) -> LatencySummary:
        ordered = sorted(latencies_ms)
        if not ordered:
            return cls(0, None, None, None)
        return cls(len(ordered), percentile(ordered, 50), percentile(ordered, 99), ordered[-1])


@dataclass(frozen=True)
class FleetApiResult:
    nodes: int
    seconds: float
    processes: int
    requests: int
    """Calls answered in the window, Heartbeat and PullTask together."""
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    errors: int
    error_codes: dict[str, int]
    by_method: dict[str, LatencySummary]
    unexpected_tasks: int
    coordinator_peak_rss_bytes: int
    coordinator_cpu_s: float
    """CPU time the coordinator used during the window (all its threads)."""
    load_generator_cpu_s: float
    """CPU time the load processes used during the window, all together."""
    machine_cpu_s: float
    """CPU time the whole machine spent busy during the window, all cores."""
    other_cpu_s: float
    """Busy time that was neither the coordinator's nor the load's (kernel threads, the bench
    process, and any other work on the machine: a busy neighbour shows up here)."""
    coordinator_loaded_torch: bool
    setup_s: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def percentile(ordered: list[float], percent: float) -> float:
    """Nearest rank: the smallest value with at least ``percent`` % of the values at or below it."""
    rank = max(math.ceil(percent / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def run_fleet_api_bench(config: FleetApiBenchConfig, report: Report) -> FleetApiResult:
    shares = _shares(config.nodes, config.num_processes)
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgefleet-bench-")))
        started = time.monotonic()
        tokens = Tokens.fresh()
        coordinator = stack.enter_context(running_coordinator(root / "coordinator", tokens))
        group = stack.enter_context(ChildGroup(root))
        first = 0
        for index, share in enumerate(shares):
            group.start(
                f"load-{index}",
                "api-client",
                [
                    "--coordinator",
                    coordinator.address,
                    "--nodes",
                    str(share),
                    "--first-index",
                    str(first),
                    "--seconds",
                    str(config.seconds),
                    "--hardware-class",
                    HARDWARE_CLASS,
                    "--seed",
                    str(index),
                ],
                env={ENROLLMENT_ENV: tokens.enrollment},
            )
            first += share
        group.wait_for(
            "ready",
            config.setup_timeout_s,
            lambda done, total: report("registering boards", done, total),
        )
        setup_s = time.monotonic() - started
        cpu_at_release = coordinator.cpu_s()
        machine_at_release = machine_cpu_s()
        released = time.monotonic()
        group.release()
        window_s = math.ceil(config.seconds)

        def progress(done: int, total: int) -> None:
            report("calling (s)", min(int(time.monotonic() - released), window_s), window_s)

        results = group.wait_for("result", config.seconds + _DRAIN_S, progress)
        cpu_s = coordinator.cpu_s() - cpu_at_release
        machine_s = machine_cpu_s() - machine_at_release
        peak_rss = coordinator.peak_rss_bytes()
        loaded_torch = coordinator.loaded_torch()

    if any(result["imported_torch"] for result in results):
        raise BenchError("a load process imported torch; boards must run without it")
    latencies: dict[str, list[float]] = {HEARTBEAT: [], PULL_TASK: []}
    errors: Counter[str] = Counter()
    for result in results:
        for method, values in _mapping(result, "latencies_ms").items():
            latencies[method].extend(float(value) for value in values)
        errors.update({code: int(count) for code, count in _mapping(result, "errors").items()})
    load_cpu_s = sum(float(str(result["cpu_s"])) for result in results)
    everything = LatencySummary.of([v for values in latencies.values() for v in values])
    return FleetApiResult(
        nodes=config.nodes,
        seconds=config.seconds,
        processes=len(shares),
        requests=everything.requests,
        requests_per_s=everything.requests / config.seconds,
        p50_ms=everything.p50_ms,
        p99_ms=everything.p99_ms,
        max_ms=everything.max_ms,
        errors=sum(errors.values()),
        error_codes=dict(errors),
        by_method={method: LatencySummary.of(values) for method, values in latencies.items()},
        unexpected_tasks=sum(int(str(result["tasks"])) for result in results),
        coordinator_peak_rss_bytes=peak_rss,
        coordinator_cpu_s=cpu_s,
        load_generator_cpu_s=load_cpu_s,
        machine_cpu_s=machine_s,
        other_cpu_s=max(machine_s - cpu_s - load_cpu_s, 0.0),
        coordinator_loaded_torch=loaded_torch,
        setup_s=setup_s,
    )


def _shares(nodes: int, processes: int) -> list[int]:
    """``nodes`` split as evenly as possible over ``processes``."""
    base, extra = divmod(nodes, processes)
    return [base + (1 if index < extra else 0) for index in range(processes)]


def _mapping(result: dict[str, object], key: str) -> dict[str, Any]:
    value = result.get(key)
    if not isinstance(value, dict):
        raise BenchError(f"a load process sent {key}={value!r}, not a mapping")
    return value
