"""The training child's entry point, run in-process: its result, and how it reports a bad job."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from checkpointing.planning.solvers.baselines import store_all
from edgefleet.harness.train_child import EXIT_JOB_ERROR, EXIT_OK, main

_JOB: dict[str, Any] = {
    "model": "small_cnn",
    "image_size": 32,
    "batch_size": 4,
    "steps": 2,
}


def _run(tmp_path: Path, job: object) -> tuple[int, dict[str, Any]]:
    job_path, result_path = tmp_path / "job.json", tmp_path / "result.json"
    job_path.write_text(json.dumps(job))
    exit_code = main([str(job_path), str(result_path)])
    return exit_code, json.loads(result_path.read_text())


def test_distillation_with_adam_reports_every_term(tmp_path: Path) -> None:
    job = {**_JOB, "optimizer": "adam", "teacher": "small_cnn"}

    exit_code, result = _run(tmp_path, job)

    assert exit_code == EXIT_OK
    assert result["survived"] is True
    terms = result["terms"]
    # Adam keeps two moments per parameter (and a step count per parameter).
    assert terms["optimizer_state_bytes"] >= 2 * terms["parameters_bytes"]
    assert terms["teacher_bytes"] >= terms["parameters_bytes"] > 0
    assert terms["raw_batch_bytes"] * 4 == terms["input_batch_bytes"] == 4 * 3 * 32 * 32 * 4
    assert result["live_tensor_peak_bytes"] >= (
        terms["parameters_bytes"] * 2 + terms["optimizer_state_bytes"] + terms["teacher_bytes"]
    )
    assert all(math.isfinite(loss) and loss >= 0 for loss in result["losses"])
    assert set(result["phase_peak_rss_bytes"]) == {"imports", "model", "training"}


def test_store_all_schedule_matches_plain_autograd(tmp_path: Path) -> None:
    _, plain = _run(tmp_path, _JOB)
    schedule = store_all(plain["stages"]).to_strings()

    exit_code, scheduled = _run(tmp_path, {**_JOB, "schedule": schedule})

    assert exit_code == EXIT_OK
    assert scheduled["losses"] == pytest.approx(plain["losses"], rel=1e-5)
    assert scheduled["live_peak_bytes"] == pytest.approx(plain["live_peak_bytes"], rel=0.05)


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({**_JOB, "model": "no_such_model"}, "no_such_model"),
        ({**_JOB, "schedule": ["Fe_99"]}, "Fe_99"),
        ({**_JOB, "schedule": ["Fe_0", "Loss"]}, "ScheduleError"),
        ({**_JOB, "batch_size": -1}, "batch_size"),
        (["not", "a", "job"], "JSON object"),
    ],
)
def test_bad_job_is_reported_as_a_job_error(tmp_path: Path, job: object, message: str) -> None:
    exit_code, result = _run(tmp_path, job)

    assert exit_code == EXIT_JOB_ERROR
    assert (result["survived"], result["error"]) == (False, "JobError")
    assert message in result["message"]


def test_natively_the_result_has_no_guest_figures(tmp_path: Path) -> None:
    _, result = _run(tmp_path, _JOB)

    assert "guest" not in result


def test_asked_through_the_environment_it_samples_its_own_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the emulated board's wrapper sets; natively the "guest" is the whole process.
    peak_file = tmp_path / "peak.json"
    monkeypatch.setenv("EDGEFLEET_GUEST_SAMPLE_S", "0.01")
    monkeypatch.setenv("EDGEFLEET_GUEST_PEAK_FILE", str(peak_file))

    exit_code, result = _run(tmp_path, _JOB)

    assert exit_code == EXIT_OK
    guest = result["guest"]
    assert 0 < guest["baseline_rss_bytes"] <= guest["peak_rss_bytes"]
    assert guest["samples"] >= 2
    assert guest["peak_rss_bytes"] <= guest["process_peak_rss_bytes"] + 2**20
    assert json.loads(peak_file.read_text()) == guest
