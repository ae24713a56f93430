"""``edgefleet bench memory-model``: its output on a small net, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cli import app

CASE_KEYS = {
    "image_size",
    "batch_size",
    "strategy",
    "predicted_peak_bytes",
    "measured_peak_bytes",
    "error",
}


def test_small_net_prints_cases_and_summary(tmp_path: Path) -> None:
    plot = tmp_path / "memory_model.png"

    result = CliRunner().invoke(
        app,
        [
            "bench",
            "memory-model",
            "--model",
            "small_cnn",
            "--image-sizes",
            "32,40",
            "--batch-sizes",
            "1,2",
            "--held-out",
            "8",
            "--repeats",
            "1",
            "--json",
            "--plot",
            str(plot),
        ],
    )

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    cases = payload["cases"]
    assert [(c["image_size"], c["strategy"]) for c in cases] == [
        (32, "store_all"),
        (32, "optimal"),
        (40, "store_all"),
        (40, "optimal"),
    ]
    assert all(set(case) >= CASE_KEYS for case in cases)
    assert payload["max_abs_err"] == max(abs(case["error"]) for case in cases)
    assert payload["max_abs_err"] <= 0.05
    assert payload["memory_model"]["model"] == "small_cnn"
    assert plot.stat().st_size > 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model", "no_such_net"], "unknown model 'no_such_net'"),
        (["--model", "small_cnn", "--image-sizes", "32,big"], "--image-sizes"),
        (["--model", "small_cnn", "--batch-sizes", "1,0"], "--batch-sizes"),
        (["--model", "small_cnn", "--held-out", "8"], "4x the largest fitted"),
        (["--model", "small_cnn", "--held-out", "4,16"], "must not be fitted on"),
        (["--model", "small_cnn", "--image-sizes", "64"], "at least 2 image sizes"),
    ],
)
def test_bad_input_exits_2(options: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["bench", "memory-model", *options])

    assert result.exit_code == 2
    assert message in result.stderr
