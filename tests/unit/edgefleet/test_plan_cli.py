import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from checkpointing.planning.chain import Chain
from checkpointing.planning.schedule import Schedule
from checkpointing.planning.simulate import simulate
from edgefleet.cli import app

CHAIN = {
    "fw": [1, 2, 1],
    "bw": [2, 3, 2, 1],
    "cw": [2, 4, 4, 1],
    "cbw": [0, 6, 6, 3],
    "ftmp": [0, 1, 0],
    "btmp": [1, 2, 1, 1],
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def chain_file(tmp_path: Path) -> Path:
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(CHAIN))
    return path


def test_plan_chain_json_is_a_valid_schedule_within_budget(
    runner: CliRunner, chain_file: Path
) -> None:
    result = runner.invoke(app, ["plan", "chain", str(chain_file), "--memory", "20", "--json"])

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["feasible"] is True
    assert payload["solve_s"] >= 0
    chain = Chain.from_dict(CHAIN)
    simulation = simulate(chain, Schedule.from_strings(chain.length, payload["sequence"]))
    assert simulation.peak == payload["peak"] <= 20
    assert simulation.makespan == payload["makespan"]


def test_plan_chain_infeasible_names_smallest_budget(runner: CliRunner, chain_file: Path) -> None:
    result = runner.invoke(app, ["plan", "chain", str(chain_file), "--memory", "12", "--json"])

    assert result.exit_code == 1
    assert "smallest feasible budget is 18" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({k: v for k, v in CHAIN.items() if k != "cbw"}, "missing key"),
        ({**CHAIN, "cw": [1, 2]}, "'cw' must have 4 entries"),
        ({**CHAIN, "btmp": [1, -2, 1, 1]}, "must not be negative"),
        ({**CHAIN, "fw": [1, "two", 1]}, "must be a number"),
        ("[1, 2", "not valid JSON"),
    ],
)
def test_plan_chain_bad_files_exit_2(
    runner: CliRunner, tmp_path: Path, content: object, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))

    result = runner.invoke(app, ["plan", "chain", str(path), "--memory", "20"])

    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_plan_chain_missing_file_and_bad_memory(runner: CliRunner, chain_file: Path) -> None:
    missing = runner.invoke(app, ["plan", "chain", "/nonexistent.json", "--memory", "20"])
    negative = runner.invoke(app, ["plan", "chain", str(chain_file), "--memory", "-5"])

    assert missing.exit_code == 2
    assert "cannot read" in missing.stderr
    assert negative.exit_code == 2
    assert "--memory" in negative.stderr


def test_plan_revolve_json(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plan", "revolve", "--steps", "4", "--checkpoints", "2", "--json"])

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["cost"] == 6 + 5  # 6 advances (Griewank-Walther) and 5 reversals, uf = ub = 1
    assert payload["sequence"][-2:] == ["Fe_0", "Bwd_0"]
    assert payload["sequence"].count("Loss") == 1
