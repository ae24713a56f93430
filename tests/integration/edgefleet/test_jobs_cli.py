"""``edgefleet jobs`` against a real coordinator on port 0."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app
from tests.integration.orchestrator.fleet import (
    ADMIN_TOKEN,
    Fleet,
    model_bytes,
    pull_each,
    server_of,
    train,
    weights,
)
from tests.integration.orchestrator.fleet import coordinator as coordinator_for_tests

JOB = """
name: pole cameras
student: tiny
image_size: 32
rounds: 2
local_steps: 3
learning_rate: 0.01
aggregation: trimmed_mean
initial_weights: student.safetensors
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with coordinator_for_tests(tmp_path / "coordinator") as running_fleet:
        yield running_fleet


@pytest.fixture
def coordinator(fleet: Fleet) -> list[str]:
    return ["--coordinator", server_of(fleet).address, "--admin-token", ADMIN_TOKEN]


def _job_file(tmp_path: Path, text: str = JOB, name: str = "job.yaml") -> Path:
    (tmp_path / "student.safetensors").write_bytes(model_bytes(weights()))
    job_file = tmp_path / name
    job_file.write_text(text)
    return job_file


def test_submit_list_get_cancel(tmp_path: Path, coordinator: list[str]) -> None:
    job_file = _job_file(tmp_path)
    runner = CliRunner()

    submitted = runner.invoke(app, ["jobs", "submit", str(job_file), *coordinator, "--json"])
    job_id = json.loads(submitted.stdout)["job_id"]
    listed = runner.invoke(app, ["jobs", "list", *coordinator, "--json"])
    cancelled = runner.invoke(app, ["jobs", "cancel", job_id, *coordinator, "--json"])
    fetched = runner.invoke(app, ["jobs", "get", job_id, *coordinator])

    assert submitted.exit_code == 0, submitted.output
    assert [job["job_id"] for job in json.loads(listed.stdout)] == [job_id]
    assert json.loads(cancelled.stdout)["state"] == "JOB_STATE_CANCELLED"
    assert "cancelled" in fetched.stdout


def test_nodes_list_on_an_empty_fleet(coordinator: list[str]) -> None:
    result = CliRunner().invoke(app, ["nodes", "list", *coordinator, "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


def test_bad_file_wrong_token_and_no_coordinator(tmp_path: Path, coordinator: list[str]) -> None:
    bad = _job_file(tmp_path, JOB.replace("rounds: 2", "rounds: none"))
    runner = CliRunner()
    wrong = [coordinator[0], coordinator[1], "--admin-token", "nope-nope"]
    nowhere = ["--coordinator", "127.0.0.1:1", "--admin-token", "admin-secret"]

    invalid = runner.invoke(app, ["jobs", "submit", str(bad), *coordinator])
    denied = runner.invoke(app, ["jobs", "list", *wrong])
    unreachable = runner.invoke(app, ["jobs", "list", *nowhere])

    assert invalid.exit_code == 2
    assert "rounds: must be a positive whole number" in invalid.stderr
    assert denied.exit_code == 2
    assert "admin token not accepted" in denied.stderr
    assert unreachable.exit_code == 2
    assert "cannot reach the coordinator" in unreachable.stderr


def test_watch_follows_a_job_to_its_end_and_download_fetches_the_model(
    tmp_path: Path, fleet: Fleet, coordinator: list[str]
) -> None:
    runner = CliRunner()
    job_file = _job_file(tmp_path, JOB.replace("rounds: 2", "rounds: 1"))
    submitted = runner.invoke(app, ["jobs", "submit", str(job_file), *coordinator, "--json"])
    job_id = json.loads(submitted.stdout)["job_id"]
    board = fleet.board("pi-1")
    (task,) = pull_each([board])
    assert train(board, task, weights(seed=2, scale=0.5)).accepted

    watched = runner.invoke(app, ["jobs", "watch", job_id, *coordinator])
    as_json = runner.invoke(app, ["jobs", "watch", job_id, *coordinator, "--json"])
    out = tmp_path / "final.safetensors"
    downloaded = runner.invoke(app, ["jobs", "download", job_id, "--out", str(out), *coordinator])
    missing = runner.invoke(
        app, ["jobs", "download", job_id, "--out", str(out), "--version", "7", *coordinator]
    )

    assert watched.exit_code == 0, watched.output
    lines = watched.stdout.splitlines()
    assert "job pending" in lines[0] and "job succeeded" in lines[-1]
    assert any("update from" in line and "accepted" in line for line in lines)
    assert [int(json.loads(line)["sequence"]) for line in as_json.stdout.splitlines()] == list(
        range(1, len(lines) + 1)
    )
    assert downloaded.exit_code == 0, downloaded.output
    assert out.stat().st_size > 0
    assert missing.exit_code == 2
    assert "no model version 7" in missing.stderr


def test_submit_without_initial_weights_names_the_field(
    tmp_path: Path, coordinator: list[str]
) -> None:
    job_file = _job_file(tmp_path, JOB.replace("initial_weights: student.safetensors", ""))
    missing_file = _job_file(
        tmp_path, JOB.replace("student.safetensors", "absent.safetensors"), "absent.yaml"
    )

    no_weights = CliRunner().invoke(app, ["jobs", "submit", str(job_file), *coordinator])

    assert no_weights.exit_code == 2
    assert "initial_weights_sha256_hex: missing" in no_weights.stderr
    absent = CliRunner().invoke(app, ["jobs", "submit", str(missing_file), *coordinator])
    assert absent.exit_code == 2
    assert "initial_weights: no such file" in absent.stderr
