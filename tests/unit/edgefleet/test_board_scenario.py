"""``edgefleet bench board --scenario``'s pure parts: the cap, the fits, the result, the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from checkpointing.planning.budget import ProcessFacts, ProcessTerms
from checkpointing.planning.planner import OPTIMAL, Plan
from checkpointing.planning.schedule import Schedule
from edgefleet.board.emulator import Board, BoardError, Emulation
from edgefleet.board.guest_sampler import GuestPeak
from edgefleet.board.guest_training import (
    WRAPPER_EXIT_BAD_ARGUMENTS,
    Allocator,
    GuestRun,
    guest_peak_of,
    wrapper_script,
)
from edgefleet.board.scenario import (
    PI3_MOBILENET,
    CgroupLimit,
    MeasurementCache,
    RunSummary,
    ScenarioResult,
    check_allocator,
    refined_facts,
    run_from_dict,
    scenario_named,
)
from edgefleet.cli import app
from edgefleet.harness.calibrate import fit_process_facts, overhead_fraction
from edgefleet.harness.hardcap import CappedRun

MIB = 2**20


@pytest.fixture
def board(tmp_path: Path) -> Board:
    (tmp_path / "board.stamp").write_text("edgefleet arm64 board\ntorch==2.9.1\n")
    return Board(tmp_path)


def test_the_cgroup_limit_is_the_cap_plus_the_emulators_share() -> None:
    limit = CgroupLimit(cap_bytes=828 * MIB, emulator_allowance_bytes=170 * MIB)

    assert limit.limit_bytes == 998 * MIB


@pytest.mark.parametrize(("cap", "allowance"), [(0, 1), (-1, 0), (100, -1)])
def test_a_cap_or_allowance_out_of_range_is_refused(cap: int, allowance: int) -> None:
    with pytest.raises(ValueError, match=r"cap_bytes|emulator_allowance_bytes"):
        CgroupLimit(cap_bytes=cap, emulator_allowance_bytes=allowance)


def test_calibration_fits_a_constant_plus_a_fraction_of_the_live_bytes() -> None:
    # Overhead 20 MiB + 0.25 x live, at live 100 and 300 MiB.
    readings = [(300 * MIB, 100 * MIB, 45 * MIB), (310 * MIB, 300 * MIB, 95 * MIB)]

    facts = fit_process_facts(readings)

    assert facts.runtime_baseline_bytes == 310 * MIB
    assert facts.allocator_overhead_fraction == pytest.approx(0.25)
    assert facts.allocator_overhead_bytes == pytest.approx(20 * MIB, abs=1)


def test_a_falling_overhead_fits_no_fraction_and_a_constant_that_covers_both() -> None:
    facts = fit_process_facts([(1, 100, 50), (1, 200, 10)])

    assert facts.allocator_overhead_fraction == 0.0
    assert facts.allocator_overhead_bytes == 50


def test_calibration_wants_two_readings() -> None:
    with pytest.raises(ValueError, match="two"):
        fit_process_facts([(1, 2, 3)])


def test_the_plans_fraction_replaces_a_smaller_one_only() -> None:
    facts = ProcessFacts(100, allocator_overhead_fraction=0.1, allocator_overhead_bytes=7)

    assert refined_facts(facts, 0.05) is None
    refined = refined_facts(facts, 0.3)
    assert refined == ProcessFacts(100, allocator_overhead_fraction=0.3, allocator_overhead_bytes=7)
    assert overhead_fraction(50, 100) == 0.5
    assert overhead_fraction(-5, 100) == 0.0
    assert overhead_fraction(500, 100) == 0.99
    assert overhead_fraction(5, 0) == 0.0


def test_scenarios_are_found_by_name() -> None:
    assert scenario_named("pi3-mobilenet") is PI3_MOBILENET
    with pytest.raises(ValueError, match="known: pi3-mobilenet"):
        scenario_named("pi5-resnet")


def test_the_cache_is_kept_per_board_build(board: Board) -> None:
    cache = MeasurementCache(board, PI3_MOBILENET, Allocator.AGENT)
    cache.write("process", {"facts": {"runtime_baseline_bytes": 1}})

    assert MeasurementCache(board, PI3_MOBILENET, Allocator.AGENT).read("process") == {
        "facts": {"runtime_baseline_bytes": 1}
    }
    (board.directory / "board.stamp").write_text("edgefleet arm64 board\ntorch==2.10.0\n")
    assert MeasurementCache(board, PI3_MOBILENET, Allocator.AGENT).read("process") is None


def test_process_measurements_are_kept_per_allocator_and_the_memory_model_is_shared(
    board: Board,
) -> None:
    agent = MeasurementCache(board, PI3_MOBILENET, Allocator.AGENT)
    default = MeasurementCache(board, PI3_MOBILENET, Allocator.GLIBC_DEFAULT)
    # What the first runs cached, before the allocator was a setting, is glibc-default's.
    default.write("process", {"allocator": "glibc-default"})
    default.write("check-b18-optimal", {"fraction": 0.99})
    default.write("memory-model", {"machine": "aarch64"})

    assert default.process_key("process") == "process"
    assert default.read(default.process_key("check-b18-optimal")) == {"fraction": 0.99}
    assert agent.read(agent.process_key("process")) is None
    assert agent.read(agent.process_key("check-b18-optimal")) is None
    assert agent.read("memory-model") == {"machine": "aarch64"}
    agent.write(agent.process_key("process"), {"allocator": "agent"})
    assert default.read(default.process_key("process")) == {"allocator": "glibc-default"}
    assert agent.read(agent.process_key("process")) == {"allocator": "agent"}


def test_the_wrapper_runs_the_boards_python_in_the_boards_environment_only(
    board: Board, tmp_path: Path
) -> None:
    script = wrapper_script(
        board, Emulation(), "/usr/bin/qemu-aarch64", tmp_path / "peak.json", 0.5
    )

    assert "exec env -i " in script
    assert "QEMU_CPU=cortex-a53" in script
    assert "EDGEFLEET_GUEST_SAMPLE_S=0.5" in script
    assert f"EDGEFLEET_GUEST_PEAK_FILE={tmp_path / 'peak.json'}" in script
    assert "EDGEFLEET_ALLOCATOR_AGENT_FIX=1" in script


def _run_wrapper(board: Board, tmp_path: Path, allocator: Allocator, *arguments: str) -> Any:
    # echo stands in for qemu-aarch64: the script's own work is the command line it builds.
    script = tmp_path / "board-python"
    script.write_text(
        wrapper_script(board, Emulation(), "/bin/echo", tmp_path / "peak.json", 1.0, allocator)
    )
    return subprocess.run(
        ["/bin/sh", str(script), *arguments], capture_output=True, text=True, check=False
    )


def test_the_agents_wrapper_runs_the_training_child_in_the_agents_process(
    board: Board, tmp_path: Path
) -> None:
    ran = _run_wrapper(
        board, tmp_path, Allocator.AGENT, "-m", "edgefleet.harness.train_child", "j.json", "r.json"
    )

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == [
        "-L",
        str(board.rootfs),
        str(board.python),
        "-s",
        "-m",
        "edgefleet.allocators.child",
        "j.json",
        "r.json",
    ]


def test_the_agents_wrapper_refuses_any_other_program(board: Board, tmp_path: Path) -> None:
    ran = _run_wrapper(
        board, tmp_path, Allocator.AGENT, "-m", "checkpointing.execution.profile", "x"
    )

    assert ran.returncode == WRAPPER_EXIT_BAD_ARGUMENTS
    assert "expected -m edgefleet.harness.train_child" in ran.stderr
    assert ran.stdout == ""


def test_the_glibc_default_wrapper_runs_what_it_is_given_without_the_fix(
    board: Board, tmp_path: Path
) -> None:
    script = wrapper_script(
        board, Emulation(), "/bin/echo", tmp_path / "peak.json", 1.0, Allocator.GLIBC_DEFAULT
    )
    ran = _run_wrapper(
        board, tmp_path, Allocator.GLIBC_DEFAULT, "-m", "edgefleet.harness.train_child", "j", "r"
    )

    assert "EDGEFLEET_ALLOCATOR_AGENT_FIX" not in script
    assert ran.stdout.split()[-4:] == ["-m", "edgefleet.harness.train_child", "j", "r"]


def _guest_run(result: dict[str, Any] | None) -> GuestRun:
    run = CappedRun(
        survived=result is not None,
        cap_bytes=16 * 2**30,
        cap_mechanism="cgroup_v1",
        peak_rss_bytes=None,
        cgroup_peak_bytes=None,
        exit_code=0 if result is not None else -9,
        killed_by_oom=result is None,
        result=result,
        stderr_tail="",
        failure=None if result is not None else "oom_kill",
        wall_s=1.0,
    )
    return GuestRun(run, None)


def test_a_run_must_have_trained_in_the_process_asked_for() -> None:
    fixed = _guest_run({"allocator": {"agent_fix_applied": True}})
    not_fixed = _guest_run({"allocator": {"agent_fix_applied": False}})
    plain = _guest_run({"survived": True})

    assert (fixed.agent_fix_applied, not_fixed.agent_fix_applied) == (True, False)
    assert plain.agent_fix_applied is None and _guest_run(None).agent_fix_applied is None
    check_allocator(fixed, Allocator.AGENT, "calibration")
    check_allocator(plain, Allocator.GLIBC_DEFAULT, "calibration")
    with pytest.raises(BoardError, match="not applied"):
        check_allocator(not_fixed, Allocator.AGENT, "calibration")
    with pytest.raises(BoardError, match="not reported"):
        check_allocator(plain, Allocator.AGENT, "plan check")
    with pytest.raises(BoardError, match="under glibc-default"):
        check_allocator(fixed, Allocator.GLIBC_DEFAULT, "plan check")


def test_a_run_cached_before_the_allocator_was_recorded_still_loads() -> None:
    data = _summary(True, 800 * MIB).to_dict()
    del data["agent_fix_applied"]

    assert run_from_dict(data).agent_fix_applied is None


PEAK = GuestPeak(
    baseline_rss_bytes=290 * MIB,
    baseline_anon_bytes=180 * MIB,
    baseline_file_bytes=110 * MIB,
    peak_rss_bytes=780 * MIB,
    emulator_share_bytes=170 * MIB,
    process_peak_rss_bytes=950 * MIB,
    samples=400,
)


def test_a_killed_runs_guest_peak_comes_from_the_samplers_file(tmp_path: Path) -> None:
    peak_file = tmp_path / "peak.json"
    assert guest_peak_of(None, peak_file) is None
    peak_file.write_text(json.dumps(PEAK.to_dict()))

    assert guest_peak_of(None, peak_file) == PEAK
    assert guest_peak_of({"guest": {**PEAK.to_dict(), "samples": 3}}, peak_file) == GuestPeak(
        **{**PEAK.to_dict(), "samples": 3}
    )


def _summary(survived: bool, peak: int | None, batch: int = 24) -> RunSummary:
    return RunSummary(
        survived=survived,
        failure=None if survived else "oom_kill",
        killed_by_oom=not survived,
        batch_size=batch,
        peak_rss_bytes=peak,
        baseline_rss_bytes=290 * MIB,
        emulator_share_bytes=170 * MIB,
        process_peak_rss_bytes=None if peak is None else peak + 170 * MIB,
        cgroup_peak_bytes=998 * MIB,
        live_tensor_peak_bytes=400 * MIB,
        step_s=[600.0] if survived else [],
        wall_s=700.0,
    )


def _result(plan_peak: int | None, store_all_survived: bool, store_all_max: int) -> dict[str, Any]:
    terms = ProcessTerms(
        runtime_baseline=290 * MIB,
        model_libraries=0,
        parameters=9 * MIB,
        gradients=9 * MIB,
        optimizer_state=9 * MIB,
        teacher=0,
        input_batch=14 * MIB,
        loader_buffers=4 * MIB,
        activations=400 * MIB,
        allocator_overhead=65 * MIB,
    )
    plan = Plan(
        batch_size=24,
        accumulation_steps=1,
        strategy=OPTIMAL,
        schedule=Schedule.from_strings(1, ["Fe_0", "Loss", "Bwd_0"]),
        terms=terms,
        time_overhead=1.3,
        throughput=0.05,
        store_all_max_batch=store_all_max,
    )
    return ScenarioResult(
        scenario=PI3_MOBILENET,
        allocator=Allocator.AGENT,
        torch_version="2.9.1+cpu",
        qemu_version="qemu-aarch64 version 7.2.22",
        limit=CgroupLimit(828 * MIB, 170 * MIB),
        cap_mechanism="cgroup_v1",
        facts=ProcessFacts(290 * MIB, 0.1, 20 * MIB),
        plan_overhead_fraction=0.15,
        plan=plan,
        plan_run=_summary(plan_peak is not None, plan_peak),
        store_all_run=_summary(store_all_survived, 850 * MIB),
        measurement_s={"profile_s": 300.0},
    ).to_dict()


def test_the_result_reports_the_cap_the_allowance_and_the_targets_met() -> None:
    result = _result(plan_peak=800 * MIB, store_all_survived=False, store_all_max=6)

    assert result["allocator"] == "agent"
    assert result["cap_bytes"] == 828 * MIB
    assert result["emulator_allowance_bytes"] == 170 * MIB
    assert result["cgroup_limit_bytes"] == 998 * MIB
    assert (result["store_all_max_batch"], result["planned_batch"]) == (6, 24)
    assert result["batch_ratio"] == 4.0
    predicted = result["plan"]["predicted_peak_bytes"]
    assert predicted == 800 * MIB
    assert result["plan"]["prediction_error"] == 0.0
    assert result["plan"]["within_budget"] is True
    assert result["store_all_at_planned_batch"]["failure"] == "oom_kill"
    assert result["targets"] == {
        "planned_at_least_3x_store_all": True,
        "plan_survives_within_10_percent": True,
        "store_all_killed": True,
    }
    json.dumps(result)


def test_missed_targets_are_reported_as_missed() -> None:
    # The plan's peak 20 % over its prediction, store-all surviving, only twice the batch.
    result = _result(plan_peak=960 * MIB, store_all_survived=True, store_all_max=12)

    assert result["targets"] == {
        "planned_at_least_3x_store_all": False,
        "plan_survives_within_10_percent": False,
        "store_all_killed": False,
    }
    assert result["plan"]["within_budget"] is False


def test_a_plan_that_was_killed_misses_its_target() -> None:
    result = _result(plan_peak=None, store_all_survived=False, store_all_max=0)

    assert result["batch_ratio"] is None
    assert result["plan"]["prediction_error"] is None
    assert result["targets"]["plan_survives_within_10_percent"] is False


runner = CliRunner()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--scenario", "pi5-resnet"], "unknown scenario"),
        (["--scenario", "pi3-mobilenet", "--cpu", "cortex-a72"], "runs on the cortex-a53"),
        (["--scenario", "pi3-mobilenet", "--threads", "0"], "threads"),
        (["--scenario", "pi3-mobilenet", "--arch", "armv7"], "--arch"),
        (["--scenario", "pi3-mobilenet", "--allocator", "jemalloc"], "--allocator must be"),
        (["--allocator", "glibc-default"], "--scenario only"),
    ],
)
def test_the_cli_refuses_bad_arguments_with_a_message(
    arguments: list[str], message: str, board: Board
) -> None:
    result = runner.invoke(app, ["bench", "board", "--board-dir", str(board.directory), *arguments])

    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_the_cli_says_to_build_a_missing_board(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["bench", "board", "--scenario", "pi3-mobilenet", "--board-dir", str(tmp_path)],
    )

    assert result.exit_code == 2
    assert "arm64_board.sh" in result.output
