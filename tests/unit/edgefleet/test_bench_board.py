"""``edgefleet bench board``'s host side: the board, the guest's command line, the result."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.board.baseline import baseline_from_probe
from edgefleet.board.emulator import Board, BoardError, Emulation, guest_command
from edgefleet.cli import app

MIB = 2**20
GUEST_MEMORY = {
    "guest_rss_bytes": 300 * MIB,
    "guest_anon_bytes": 180 * MIB,
    "guest_file_bytes": 120 * MIB,
    "guest_referenced_file_bytes": 40 * MIB,
    "status_rss_bytes": 480 * MIB,
    "status_anon_bytes": 330 * MIB,
    "status_file_bytes": 150 * MIB,
}
PROBE: dict[str, object] = {
    "machine": "aarch64",
    "torch_version": "2.9.1",
    "threads": 4,
    "import_s": 70.5,
    "warm_up_s": 9.25,
    "guest": GUEST_MEMORY,
    "runtime": {
        "runtime_baseline_bytes": 390 * MIB,
        "rss_anon_bytes": 330 * MIB,
        "rss_shmem_bytes": 0,
        "rss_file_bytes": 150 * MIB,
        "file_allowance_bytes": 60 * MIB,
        "allocator_fixed": True,
    },
}


@pytest.fixture
def board(tmp_path: Path) -> Board:
    (tmp_path / "board.stamp").write_text("edgefleet arm64 board\n")
    return Board(tmp_path)


def test_a_board_without_its_stamp_says_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(BoardError, match=r"run scripts/arm64_board\.sh"):
        Board(tmp_path)


def test_the_guest_runs_the_boards_python_with_the_boards_packages_first(
    board: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/host/venv/site-packages")
    monkeypatch.setenv("OMP_NUM_THREADS", "64")

    command, environment = guest_command(
        board, Emulation(cpu="cortex-a72", threads=2), "/usr/bin/qemu-aarch64", ["-c", "pass"]
    )

    qemu_at = command.index("/usr/bin/qemu-aarch64")
    assert command[qemu_at:] == [
        "/usr/bin/qemu-aarch64",
        "-L",
        str(board.rootfs),
        str(board.python),
        "-s",
        "-c",
        "pass",
    ]
    assert environment["QEMU_CPU"] == "cortex-a72"
    assert environment["OMP_NUM_THREADS"] == "2"
    site, repository = environment["PYTHONPATH"].split(":")
    assert site == str(board.site_packages)
    assert (Path(repository) / "node_agent" / "agent.py").is_file()


def test_a_preloaded_library_reaches_the_guest_program_and_not_qemu(board: Board) -> None:
    library = Path("/cache/libedgefleet_arena-aarch64.so")

    command, environment = guest_command(
        board, Emulation(preload=library), "/usr/bin/qemu-aarch64", ["-c", "pass"]
    )

    qemu_at = command.index("/usr/bin/qemu-aarch64")
    assert command[qemu_at + 3 : qemu_at + 5] == ["-E", f"LD_PRELOAD={library}"]
    assert "LD_PRELOAD" not in environment


@pytest.mark.parametrize(
    ("cpu", "threads", "timeout_s"),
    [("cortex-a76", 4, 1.0), ("cortex-a53", 0, 1.0), ("cortex-a53", 4, 0.0)],
)
def test_emulation_settings_are_checked(cpu: str, threads: int, timeout_s: float) -> None:
    with pytest.raises(ValueError):
        Emulation(cpu=cpu, threads=threads, timeout_s=timeout_s)


def test_the_top_level_figures_are_the_guests_and_qemus_are_apart() -> None:
    result = baseline_from_probe(PROBE, Emulation(), "qemu-aarch64 version 7.2.22")

    payload = result.to_dict()
    assert payload["runtime_baseline_bytes"] == (180 + 40) * MIB
    assert payload["rss_anon_bytes"] == 180 * MIB
    assert payload["rss_file_bytes"] == 120 * MIB
    assert payload["file_allowance_bytes"] == 40 * MIB
    assert payload["cpu"] == "cortex-a53"
    assert payload["qemu"] == {
        "rss_bytes": 480 * MIB,
        "rss_anon_bytes": 330 * MIB,
        "rss_file_bytes": 150 * MIB,
        "runtime_baseline_bytes": 390 * MIB,
        "file_allowance_bytes": 60 * MIB,
    }


def test_a_qemu_that_reports_no_guest_rss_is_refused() -> None:
    guest = dict.fromkeys(GUEST_MEMORY, 0) | {"status_rss_bytes": 480 * MIB}

    with pytest.raises(ValueError, match=r"qemu 7\.2"):
        baseline_from_probe(PROBE | {"guest": guest}, Emulation(), "qemu-aarch64 version 10.0.2")


def test_the_command_says_to_build_a_missing_board(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "board", "--board-dir", str(tmp_path / "none")])

    assert result.exit_code == 2
    assert "run scripts/arm64_board.sh" in result.output
    assert "Traceback" not in result.output


def test_the_command_refuses_an_unknown_core(board: Board) -> None:
    result = CliRunner().invoke(
        app, ["bench", "board", "--cpu", "cortex-a76", "--board-dir", str(board.directory)]
    )

    assert result.exit_code == 2
    assert "cortex-a53, cortex-a72" in result.output


def test_the_command_says_to_install_a_missing_qemu(
    board: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(board.directory))

    result = CliRunner().invoke(app, ["bench", "board", "--board-dir", str(board.directory)])

    assert result.exit_code == 1
    assert "qemu-aarch64 is not installed" in result.output
    assert "Traceback" not in result.output
