"""The fleet demo end to end at a small scale: a real coordinator, real capped agent processes."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.demo.boards import BOARDS
from edgefleet.demo.models import DemoSettings
from edgefleet.demo.run import DemoConfig, run_demo

_BOARDS = BOARDS[:2]
_SMALL = DemoSettings(
    image_size=32,
    boards=tuple(board.viewpoint for board in _BOARDS),
    teacher_frames=96,
    teacher_epochs=1,
    student_frames=96,
    student_epochs=1,
    pretrain_batch_size=32,
    frames_per_board=24,
    eval_frames_per_board=24,
    rounds=2,
)
_BOARD_KEYS = {
    "name",
    "hardware_class",
    "cap_bytes",
    "training_share_bytes",
    "batch_size",
    "store_all_max_batch",
    "strategy",
    "predicted_peak_bytes",
    "measured_peak_bytes",
    "accuracy_before",
    "accuracy_after",
}


def test_the_demo_trains_capped_boards_to_the_end(tmp_path: Path) -> None:
    config = DemoConfig(
        data_dir=tmp_path,
        settings=_SMALL,
        boards=_BOARDS,
        batch_size=8,
        local_steps=2,
        rounds=2,
        timeout_s=600,
    )
    said: list[str] = []

    result, teacher_by_board = run_demo(config, said.append)

    figures = result.to_dict()
    assert set(figures) == {
        "boards",
        "teacher_accuracy",
        "fleet_accuracy_before",
        "fleet_accuracy_after",
        "elapsed_s",
        "runtime_baseline_bytes",
    }
    assert [set(board) for board in figures["boards"]] == [_BOARD_KEYS] * 2  # type: ignore[attr-defined]
    for board, kind in zip(result.boards, _BOARDS, strict=True):
        assert board.hardware_class == kind.kind.hardware_class
        assert board.batch_size == 8
        assert board.strategy in ("store_all", "optimal")
        assert 0 < board.measured_peak_bytes < board.cap_bytes
        assert board.predicted_peak_bytes < board.cap_bytes
    assert result.oom_kills == 0
    assert all(len(scores) == 3 for scores in result.accuracy_by_round.values())
    assert set(teacher_by_board) == {board.name for board in _BOARDS}
    assert any("round 1 closed" in line for line in said)


def test_a_data_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")

    result = CliRunner().invoke(app, ["demo", "--data-dir", str(not_a_folder)])

    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert str(not_a_folder) in result.output
