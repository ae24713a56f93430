"""The demo's boards: real classes, shares from the measured arm64 runtime; the demo's settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgefleet.demo.boards import ARM64_RUNTIME_BASELINE_BYTES, BOARDS, RASPBERRY_PI_3
from edgefleet.demo.run import DemoConfig
from node_agent.board_classes import board_class

_RESULTS = Path(__file__).resolve().parents[4] / "docs" / "results"


def test_the_arm64_runtime_is_the_stored_measurement_of_a_pi_3_core() -> None:
    runs = json.loads((_RESULTS / "board_arm64_baseline.json").read_text())
    cortex_a53 = next(run for run in runs if run["cpu"] == "cortex-a53")

    assert cortex_a53["rss_bytes"] == ARM64_RUNTIME_BASELINE_BYTES


def test_a_boards_share_is_its_class_budget_less_the_arm64_runtime() -> None:
    pi3 = board_class("raspberry-pi-3")

    share = RASPBERRY_PI_3.training_bytes

    assert share == pi3.default_budget_bytes - ARM64_RUNTIME_BASELINE_BYTES
    assert 400 * 2**20 < share < 500 * 2**20
    assert BOARDS[0].cap_bytes(900 * 2**20) == 900 * 2**20 + share
    assert {board.kind.hardware_class for board in BOARDS} == {"raspberry-pi-3"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"boards_per_round": 0}, "boards_per_round"),
        ({"boards_per_round": 5}, "boards_per_round"),
        ({"rounds": 0}, "rounds"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_demo_settings_out_of_range_are_refused(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DemoConfig(data_dir=tmp_path, **changes)  # type: ignore[arg-type]
