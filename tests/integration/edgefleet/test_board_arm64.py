"""The emulated arm64 board runs its own python and reads its own memory (seconds per core).

Skipped where qemu-user or the board (scripts/arm64_board.sh) is absent: building the board
takes minutes and needs apt-get and PyPI, so the tests never build it. The full
``edgefleet bench board`` (torch imported under emulation, minutes) is not run here; one tiny
training job is (about two minutes), because the scenario's every run depends on its path.
"""

import json
import shutil
from pathlib import Path

import pytest

from edgefleet.board.emulator import (
    CPUS,
    Board,
    BoardError,
    Emulation,
    default_board_dir,
    run_guest,
)
from edgefleet.board.guest_training import Allocator, run_on_board
from edgefleet.harness.hardcap import TrainJob
from node_agent.arena import build_arena

_MEMORY_CODE = (
    "import json, platform\n"
    "from edgefleet.board.guest_memory import read_guest_memory\n"
    "print(json.dumps({'machine': platform.machine(), **read_guest_memory().to_dict()}))\n"
)


@pytest.fixture(scope="module")
def board() -> Board:
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-user is not installed (apt-get install qemu-user)")
    try:
        return Board(default_board_dir())
    except BoardError as error:
        pytest.skip(f"no arm64 board here: {error}")


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_the_guest_is_arm64_and_its_memory_is_apart_from_qemus(board: Board, cpu: str) -> None:
    stdout = run_guest(board, Emulation(cpu=cpu, threads=1, timeout_s=120), ["-c", _MEMORY_CODE])

    memory = json.loads(stdout.strip().splitlines()[-1])
    assert memory["machine"] == "aarch64"
    # A bare interpreter: about 12 MB of its own; qemu adds tens of MB it would not have.
    assert 4 * 2**20 < memory["guest_rss_bytes"] < 64 * 2**20
    assert 0 < memory["guest_anon_bytes"] < memory["guest_rss_bytes"]
    assert memory["status_rss_bytes"] > memory["guest_rss_bytes"] + 8 * 2**20


def test_a_guest_killed_by_sigill_is_named(board: Board) -> None:
    code = "import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n"

    with pytest.raises(BoardError, match=r"SIGILL .*illegal instruction"):
        run_guest(board, Emulation(threads=1, timeout_s=120), ["-c", code])


def test_a_failing_guest_reports_its_error_output(board: Board) -> None:
    code = "import sys\nsys.exit('the board refused: no torch')\n"

    with pytest.raises(BoardError, match=r"status 1 .*\n.*the board refused: no torch"):
        run_guest(board, Emulation(threads=1, timeout_s=120), ["-c", code])


_PLATFORM_CODE = (
    "import dataclasses, json\n"
    "from node_agent.platform_support import UnsupportedPlatform, check, this_platform\n"
    "board = this_platform()\n"
    "check(board)\n"
    "try:\n"
    "    check(dataclasses.replace(board, torch_version='2.14.1+cu130'))\n"
    "    refused = ''\n"
    "except UnsupportedPlatform as error:\n"
    "    refused = str(error)\n"
    "print(json.dumps({**dataclasses.asdict(board), 'refused': refused}))\n"
)


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_the_agents_platform_check_sees_a_pi_core_without_lse(board: Board, cpu: str) -> None:
    stdout = run_guest(board, Emulation(cpu=cpu, threads=1, timeout_s=120), ["-c", _PLATFORM_CODE])

    seen = json.loads(stdout.strip().splitlines()[-1])
    assert seen["arch"] == "aarch64" and seen["torch_version"] == "2.9.1"
    assert seen["has_lse_atomics"] is False
    assert "SIGILL" in seen["refused"] and "2.14.1+cu130" in seen["refused"]


def test_a_training_job_runs_on_the_board_in_the_agents_process(
    board: Board, tmp_path: Path
) -> None:
    # The scenario's path: run_capped -> the wrapper -> edgefleet.allocators.child under the
    # board's python, which must import nothing the board lacks and must apply the fix.
    job = TrainJob(model="small_cnn", image_size=32, batch_size=2, num_classes=10, steps=1)

    guest_run = run_on_board(
        board,
        Emulation(threads=1, timeout_s=600),
        job,
        4 * 2**30,
        tmp_path,
        allocator=Allocator.AGENT,
    )

    assert guest_run.run.survived, guest_run.run.stderr_tail
    assert guest_run.agent_fix_applied is True
    assert guest_run.guest is not None and guest_run.overhead_bytes is not None
    assert guest_run.run.result is not None
    assert guest_run.run.result["allocator"]["malloc_libraries"] == []


_CROSS_COMPILER = "aarch64-linux-gnu-gcc"
_ARENA_PROBE = Path(__file__).resolve().parents[2] / "unit" / "node_agent" / "arena_probe.py"


def test_the_arena_built_for_the_board_trains_as_glibc_does_there(
    board: Board, tmp_path: Path
) -> None:
    if shutil.which(_CROSS_COMPILER) is None:
        pytest.skip(f"no {_CROSS_COMPILER} here (apt-get install gcc-aarch64-linux-gnu)")
    library = build_arena(tmp_path / "libedgefleet_arena-aarch64.so", compiler=_CROSS_COMPILER)
    plain = Emulation(threads=2, timeout_s=600)

    without = json.loads(run_guest(board, plain, [str(_ARENA_PROBE), "steps"]).splitlines()[-1])
    preloaded = Emulation(threads=2, timeout_s=600, preload=library)
    with_arena = json.loads(
        run_guest(board, preloaded, [str(_ARENA_PROBE), "steps"]).splitlines()[-1]
    )

    assert with_arena["losses"] == without["losses"]
    assert with_arena["kept_intact"] is True
    assert without["stats"] is None
    assert with_arena["stats"]["hits"] > 0
