"""The checkpointing benchmark and the showcase, end to end on a small model."""

import json

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app

ROW_KEYS = {
    "strategy",
    "segments",
    "budget_bytes",
    "predicted_peak_bytes",
    "measured_peak_bytes",
    "step_time_s",
    "time_ratio",
    "max_grad_rel_diff",
}


@pytest.fixture(scope="module")
def bench_payload() -> dict[str, object]:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "checkpointing",
            "--model",
            "small_cnn",
            "--image-size",
            "32",
            "--batch-size",
            "4",
            "--budgets",
            "0.9,0.75",
            "--repeats",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload: dict[str, object] = json.loads(result.stdout)
    return payload


def test_rows_have_the_documented_fields(bench_payload: dict[str, object]) -> None:
    rows = bench_payload["rows"]
    assert isinstance(rows, list)

    strategies = [row["strategy"] for row in rows]

    assert strategies[0] == "store_all"
    assert "optimal" in strategies
    assert all(set(row) >= ROW_KEYS for row in rows)
    assert rows[0]["time_ratio"] == 1.0


def test_optimal_rows_fit_their_budget_with_identical_gradients(
    bench_payload: dict[str, object],
) -> None:
    rows = [row for row in bench_payload["rows"] if row["strategy"] == "optimal"]  # type: ignore[attr-defined]

    for row in rows:
        assert row["predicted_peak_bytes"] <= row["budget_bytes"]
        assert row["max_grad_rel_diff"] == 0.0
        error = abs(row["measured_peak_bytes"] / row["predicted_peak_bytes"] - 1)
        assert error <= 0.05, row


def test_bad_model_and_budgets_exit_2() -> None:
    runner = CliRunner()
    common = ["bench", "checkpointing", "--image-size", "32", "--batch-size", "2"]

    unknown = runner.invoke(app, [*common, "--model", "no_such_net"])
    budgets = runner.invoke(app, [*common, "--model", "small_cnn", "--budgets", "0.5,lots"])

    assert unknown.exit_code == 2
    assert "unknown model 'no_such_net'" in unknown.stderr
    assert budgets.exit_code == 2
    assert "--budgets" in budgets.stderr


def test_showcase_trains_identically_under_budget() -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "showcase",
            "--model",
            "small_cnn",
            "--image-size",
            "32",
            "--batch-size",
            "4",
            "--json",
        ],
    )

    assert result.exit_code == 0, result.output
    training = json.loads(result.stdout)["training"]
    assert training["max_weight_diff"] == 0.0
    assert training["losses_optimal"] == training["losses_plain"]
    assert training["predicted_peak_bytes"] <= training["budget_bytes"]
