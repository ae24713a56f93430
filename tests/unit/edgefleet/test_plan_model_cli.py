"""``edgefleet plan model``: bad input is refused at once; a real plan for a small model."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app


@pytest.mark.parametrize("budget", ["0", "-1GiB", "lots"])
def test_bad_budgets_exit_2(budget: str) -> None:
    result = CliRunner().invoke(
        app,
        [
            "plan",
            "model",
            "--model",
            "small_cnn",
            "--image-size",
            "32",
            f"--memory-budget={budget}",
        ],
    )

    assert result.exit_code == 2
    assert "--memory-budget" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("flag", ["--model", "--teacher"])
def test_unknown_models_exit_2(flag: str) -> None:
    arguments = ["plan", "model", "--model", "small_cnn", "--image-size", "32"]
    arguments += ["--memory-budget", "2GiB", flag, "no_such_net"]

    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 2
    assert "unknown model 'no_such_net'" in result.stderr


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: the memory model and calibration are measured once."""
    return tmp_path_factory.mktemp("cache")


def test_plans_a_small_model_within_budget(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_CACHE", str(cache))
    arguments = ["plan", "model", "--model", "small_cnn", "--image-size", "32"]
    arguments += ["--num-classes", "10", "--memory-budget", "1.5GiB", "--json"]

    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["batch_size"] >= 1
    assert plan["accumulation_steps"] == 1
    assert plan["predicted_peak_bytes"] <= 1.5 * 2**30
    assert plan["predicted_peak_bytes"] == sum(plan["terms"].values())
    assert plan["store_all_max_batch"] <= plan["batch_size"]
    assert plan["time_overhead"] <= 1.5
    assert (cache / "memory-models").is_dir()


def test_nothing_fits_exits_1_with_shortfall(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_CACHE", str(cache))
    arguments = ["plan", "model", "--model", "small_cnn", "--image-size", "32"]
    arguments += ["--num-classes", "10", "--memory-budget", "100MiB"]

    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 1
    assert "not even batch 1" in result.stderr
    assert "more" in result.stderr
