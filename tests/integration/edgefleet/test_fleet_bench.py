"""The coordinator benchmarks end to end at a tiny scale: real processes, real gRPC, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.fleet_bench.fleet_api import percentile


def _children() -> list[str]:
    """Command lines of this process's live (not zombie) children."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(command.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _run(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(app, ["bench", *args, "--json"])
    assert result.exit_code == 0, result.output
    payload: dict[str, object] = json.loads(result.stdout)
    return payload


@pytest.fixture(scope="module")
def aggregation() -> dict[str, object]:
    return _run(
        "aggregation",
        "--nodes",
        "3",
        "--model",
        "small_cnn",
        "--image-size",
        "32",
        "--num-classes",
        "10",
    )


def test_every_update_is_accepted_and_aggregated(aggregation: dict[str, object]) -> None:
    assert {"nodes", "update_bytes", "aggregate_s", "coordinator_peak_rss_bytes"} <= set(
        aggregation
    )
    assert aggregation["nodes"] == 3
    assert aggregation["accepted"] == 3
    assert aggregation["outcome"] == "quorum"
    assert aggregation["fsync"] is True


def test_aggregation_figures_are_plausible(aggregation: dict[str, object]) -> None:
    update_bytes = aggregation["update_bytes"]
    aggregate_s = aggregation["aggregate_s"]
    peak = aggregation["coordinator_peak_rss_bytes"]
    assert isinstance(update_bytes, int) and isinstance(aggregate_s, float)
    assert isinstance(peak, int)

    # small_cnn with 10 classes: about 17.6k float32 parameters and buffers, plus the header.
    assert 60_000 < update_bytes < 100_000
    assert 0 < float(str(aggregation["first_verdict_s"])) <= float(str(aggregation["upload_s"]))
    assert float(str(aggregation["upload_s"])) < aggregate_s < 60
    assert 0 <= float(str(aggregation["aggregation_s"])) < aggregate_s
    assert int(str(aggregation["coordinator_rss_at_release_bytes"])) <= peak < 2 << 30
    # The coordinator runs without torch, as on a server without the agent's extra.
    assert aggregation["coordinator_loaded_torch"] is False


def test_the_aggregation_bench_leaves_no_process_behind(aggregation: dict[str, object]) -> None:
    assert aggregation["accepted"] == 3
    assert _children() == []


def test_a_failed_run_stops_its_coordinator_and_boards() -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "aggregation",
            "--nodes",
            "2",
            "--model",
            "small_cnn",
            "--image-size",
            "32",
            "--num-classes",
            "10",
            # Far too short for the round: the run fails after every process has started.
            "--timeout",
            "0.001",
        ],
    )

    assert result.exit_code == 1, result.output
    assert "DEADLINE_EXCEEDED" in result.output
    assert _children() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["aggregation", "--nodes", "0"], "--nodes must be at least 1"),
        (["aggregation", "--nodes", "2", "--model", "no_such_net"], "unknown model"),
        (["aggregation", "--nodes", "2", "--image-size", "8"], "image_size must be at least"),
        (["fleet-api", "--nodes", "0"], "--nodes must be at least 1"),
        (["fleet-api", "--nodes", "5", "--seconds", "0"], "--seconds must be positive"),
        (["fleet-api", "--nodes", "5", "--processes", "6"], "--processes must be from 1"),
    ],
)
def test_bad_options_are_refused_with_a_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["bench", *args])

    assert result.exit_code == 2
    assert message in result.output


def test_the_fleet_api_bench_measures_every_call_without_errors() -> None:
    payload = _run("fleet-api", "--nodes", "20", "--seconds", "3")

    assert {"nodes", "requests", "p50_ms", "p99_ms", "errors"} <= set(payload)
    assert payload["nodes"] == 20
    assert payload["errors"] == 0
    by_method = payload["by_method"]
    assert isinstance(by_method, dict)
    requests = payload["requests"]
    assert isinstance(requests, int)
    # Pulls every 5 s (the coordinator's idle interval) from a random phase: about 12 in 3 s.
    assert 1 <= requests == sum(summary["requests"] for summary in by_method.values())
    p50, p99, most = (float(str(payload[key])) for key in ("p50_ms", "p99_ms", "max_ms"))
    assert 0 < p50 <= p99 <= most < 10_000
    assert payload["unexpected_tasks"] == 0
    assert payload["coordinator_loaded_torch"] is False
    assert _children() == []


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]

    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
