"""Benchmarks of the coordinator under a simulated fleet: real processes, real gRPC, no mocks."""

from edgefleet.fleet_bench.aggregation import (
    AggregationBenchConfig,
    AggregationResult,
    run_aggregation_bench,
)
from edgefleet.fleet_bench.fleet_api import (
    FleetApiBenchConfig,
    FleetApiResult,
    LatencySummary,
    run_fleet_api_bench,
)
from edgefleet.fleet_bench.processes import BenchError

__all__ = [
    "AggregationBenchConfig",
    "AggregationResult",
    "BenchError",
    "FleetApiBenchConfig",
    "FleetApiResult",
    "LatencySummary",
    "run_aggregation_bench",
    "run_fleet_api_bench",
]
