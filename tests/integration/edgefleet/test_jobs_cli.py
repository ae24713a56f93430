"""``edgefleet jobs`` against a real coordinator on port 0."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app
from orchestrator.config import Address, CoordinatorConfig
from orchestrator.server import running

JOB = """
name: pole cameras
student: mobilenet_v2
image_size: 64
rounds: 2
local_steps: 3
learning_rate: 0.01
aggregation: trimmed_mean
"""


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[list[str]]:
    config = CoordinatorConfig(
        data_dir=tmp_path / "coordinator",
        enrollment_token="enroll-secret",
        admin_token="admin-secret",
        listen=Address("127.0.0.1", 0),
    )
    with running(config, grace_s=0.1) as server:
        yield ["--coordinator", server.address, "--admin-token", "admin-secret"]


def test_submit_list_get_cancel(tmp_path: Path, coordinator: list[str]) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(JOB)
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
    bad = tmp_path / "bad.yaml"
    bad.write_text(JOB.replace("rounds: 2", "rounds: none"))
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
