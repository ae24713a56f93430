"""``edgefleet bench allocator``'s pure parts: candidates, child environments, results, options."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.allocators.bench import (
    OPTIMAL,
    STORE_ALL,
    TARGET_OVERHEAD_RATIO,
    AllocatorBenchConfig,
    AllocatorBenchError,
    RunResult,
    check_libraries,
    run_order,
    summarise,
)
from edgefleet.allocators.candidates import (
    AGENT_FIX_ENV,
    CANDIDATES,
    REFERENCE,
    Candidate,
    candidates_named,
    child_environment,
)
from edgefleet.cli import app

MIB = 2**20
JEMALLOC = Path("/opt/lib/libjemalloc.so.2")


def _candidate(name: str) -> Candidate:
    return next(candidate for candidate in CANDIDATES if candidate.name == name)


def test_the_table_has_the_candidates_the_issue_asks_for() -> None:
    names = [candidate.name for candidate in CANDIDATES]
    assert names[0] == REFERENCE
    assert len(set(names)) == len(names)
    assert _candidate("glibc-agent-128k").agent_fix
    assert sum(candidate.jemalloc for candidate in CANDIDATES) >= 2
    assert ("MALLOC_ARENA_MAX", "2") in _candidate("glibc-arenas-2").variables
    assert dict(_candidate("jemalloc-no-decay").variables)["MALLOC_CONF"] == (
        "dirty_decay_ms:-1,muzzy_decay_ms:-1"
    )


def test_the_default_child_has_no_allocator_setting_of_the_parent() -> None:
    inherited = {
        "PATH": "/usr/bin",
        "MALLOC_ARENA_MAX": "1",
        "MALLOC_CONF": "narenas:1",
        "GLIBC_TUNABLES": "glibc.malloc.top_pad=0",
        "LD_PRELOAD": "/lib/libtcmalloc.so",
        AGENT_FIX_ENV: "1",
    }
    assert child_environment(_candidate(REFERENCE), inherited, JEMALLOC) == {"PATH": "/usr/bin"}


def test_a_jemalloc_candidate_preloads_the_library_with_its_settings() -> None:
    environment = child_environment(_candidate("jemalloc-no-decay"), {"HOME": "/root"}, JEMALLOC)
    assert environment == {
        "HOME": "/root",
        "LD_PRELOAD": str(JEMALLOC),
        "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1",
    }


def test_glibc_candidates_set_variables_and_the_agent_candidate_asks_for_the_fix() -> None:
    hold = child_environment(_candidate("glibc-hold"), {}, JEMALLOC)
    assert hold["MALLOC_MMAP_THRESHOLD_"] == str(32 * MIB)
    assert hold["MALLOC_TOP_PAD_"] == str(64 * MIB)
    assert "LD_PRELOAD" not in hold
    assert child_environment(_candidate("glibc-agent-128k"), {}, JEMALLOC) == {AGENT_FIX_ENV: "1"}


def test_the_arena_candidate_preloads_the_library_built_for_the_run() -> None:
    built = Path("/cache/libedgefleet_arena.so")

    environment = child_environment(_candidate("arena"), {"LD_PRELOAD": "/x.so"}, JEMALLOC, built)

    assert environment == {"LD_PRELOAD": str(built)}
    with pytest.raises(ValueError, match="library path"):
        child_environment(_candidate("arena"), {}, JEMALLOC)


def test_torchs_huge_page_switch_is_an_allocator_setting() -> None:
    environment = child_environment(_candidate("glibc-agent-128k-thp"), {}, JEMALLOC)

    assert environment == {AGENT_FIX_ENV: "1", "C10_THP_MEM_ALLOC_ENABLE": "1"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Glibc"}, "lower-case"),
        ({"variables": (("PATH", "/bin"),)}, "not an allocator setting"),
        ({"variables": (("LD_PRELOAD", "/x.so"),)}, "not an allocator setting"),
        ({"variables": (("MALLOC_CONF", "retain:true"),)}, "jemalloc only"),
        (
            {"variables": (("MALLOC_ARENA_MAX", "1"), ("MALLOC_ARENA_MAX", "2"))},
            "twice",
        ),
        ({"jemalloc": True, "agent_fix": True}, "glibc's"),
        ({"arena": True, "jemalloc": True}, "no other allocator setting"),
        ({"arena": True, "variables": (("MALLOC_ARENA_MAX", "1"),)}, "no other allocator"),
    ],
)
def test_a_malformed_candidate_is_refused(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"name": "x", "description": "x", **kwargs}
    with pytest.raises(ValueError, match=message):
        Candidate(**fields)  # type: ignore[arg-type]


def test_named_candidates_put_the_reference_first() -> None:
    chosen = candidates_named("jemalloc, glibc-hold")
    assert [c.name for c in chosen] == [REFERENCE, "jemalloc", "glibc-hold"]
    assert [c.name for c in candidates_named(f"glibc-hold,{REFERENCE}")] == [
        REFERENCE,
        "glibc-hold",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "at least one"), ("tcmalloc", "unknown"), ("jemalloc,jemalloc", "twice")],
)
def test_bad_candidate_lists_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        candidates_named(text)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 1}, "steps"),
        ({"repeats": 0}, "repeats"),
        ({"batch_size": 0}, "batch-size"),
        ({"budget_fraction": 1.0}, "budget fraction"),
        ({"timeout_s": 0.0}, "timeout"),
        ({"candidates": (_candidate("jemalloc"),)}, REFERENCE),
        ({"candidates": (_candidate(REFERENCE), _candidate(REFERENCE))}, "twice"),
    ],
)
def test_a_bad_config_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AllocatorBenchConfig(**kwargs)  # type: ignore[arg-type]


def test_runs_are_interleaved_candidate_by_candidate() -> None:
    a, b = _candidate(REFERENCE), _candidate("jemalloc")
    order = [(repeat, schedule, c.name) for repeat, schedule, c in run_order((a, b), 2)]
    assert order == [
        (0, STORE_ALL, a.name),
        (0, STORE_ALL, b.name),
        (0, OPTIMAL, a.name),
        (0, OPTIMAL, b.name),
        (1, STORE_ALL, a.name),
        (1, STORE_ALL, b.name),
        (1, OPTIMAL, a.name),
        (1, OPTIMAL, b.name),
    ]


def test_the_job_carries_the_schedule_and_sizes() -> None:
    job = AllocatorBenchConfig(image_size=64, batch_size=8, steps=3).job(("Fe_0", "Loss"))
    assert (job.model, job.image_size, job.batch_size, job.steps) == ("mobilenet_v2", 64, 8, 3)
    assert job.schedule == ("Fe_0", "Loss")
    assert job.num_classes == 1000


def _payload(peak_mib: int, live_mib: int, steps_s: list[float]) -> dict[str, object]:
    return {
        "survived": True,
        "baseline_rss_bytes": 500 * MIB,
        "peak_rss_bytes": (500 + peak_mib) * MIB,
        "live_tensor_peak_bytes": live_mib * MIB,
        "step_times_s": steps_s,
        "allocator": {"malloc_libraries": []},
    }


def _run(candidate: str, schedule: str, repeat: int, payload: dict[str, object]) -> RunResult:
    return RunResult.from_child(candidate, schedule, repeat, 0, payload)


def test_a_childs_result_is_measured_above_its_baseline() -> None:
    run = _run(REFERENCE, STORE_ALL, 0, _payload(300, 250, [3.0, 1.0, 1.2]))
    assert run.survived
    assert run.baseline_rss_bytes == 500 * MIB
    assert run.peak_above_baseline_bytes == 300 * MIB
    assert run.step_times_s == (3.0, 1.0, 1.2)


def test_a_failed_child_says_why() -> None:
    failure = {"survived": False, "error": "MemoryError", "message": "out of memory"}
    run = RunResult.from_child("jemalloc", OPTIMAL, 0, 3, failure)
    assert not run.survived
    assert run.error == "MemoryError: out of memory"
    crash = RunResult.from_child("jemalloc", OPTIMAL, 0, -11, None, "Segmentation fault\n")
    assert crash.error == "exit code -11: Segmentation fault"


def test_rows_take_the_worst_memory_and_the_median_step_without_first_steps() -> None:
    runs = [
        _run(REFERENCE, STORE_ALL, 0, _payload(300, 200, [9.0, 1.0, 1.0])),
        _run("jemalloc", STORE_ALL, 0, _payload(210, 200, [9.0, 2.0, 2.0])),
        _run(REFERENCE, STORE_ALL, 1, _payload(320, 200, [9.0, 1.0, 1.0])),
        _run("jemalloc", STORE_ALL, 1, _payload(200, 200, [9.0, 2.0, 2.0])),
    ]
    reference, jemalloc = summarise(runs)
    assert (reference.candidate, reference.runs, reference.survived_runs) == (REFERENCE, 2, 2)
    assert reference.peak_above_baseline_bytes == 320 * MIB
    assert reference.overhead_ratio == pytest.approx(0.6)
    assert reference.median_step_s == 1.0
    assert reference.step_ratio == 1.0
    assert not reference.meets_target
    assert jemalloc.overhead_ratio == pytest.approx(0.05)
    assert jemalloc.overhead_ratio is not None
    assert jemalloc.overhead_ratio <= TARGET_OVERHEAD_RATIO
    assert jemalloc.step_ratio == pytest.approx(2.0)
    assert not jemalloc.meets_target


def test_a_candidate_meets_the_target_with_both_memory_and_time() -> None:
    runs = [
        _run(REFERENCE, OPTIMAL, 0, _payload(400, 100, [5.0, 2.0, 2.0])),
        _run("glibc-hold", OPTIMAL, 0, _payload(108, 100, [5.0, 2.1, 2.1])),
    ]
    assert [row.meets_target for row in summarise(runs)] == [False, True]


def test_ratios_are_taken_within_a_schedule_and_failures_have_none() -> None:
    runs = [
        _run(REFERENCE, STORE_ALL, 0, _payload(300, 200, [9.0, 1.0])),
        _run(REFERENCE, OPTIMAL, 0, _payload(150, 100, [9.0, 2.0])),
        _run("jemalloc", OPTIMAL, 0, _payload(110, 100, [9.0, 3.0])),
        RunResult.from_child("glibc-heap-only", OPTIMAL, 0, 3, {"error": "MemoryError"}),
    ]
    rows = {(row.candidate, row.schedule): row for row in summarise(runs)}
    assert rows[("jemalloc", OPTIMAL)].step_ratio == pytest.approx(1.5)
    failed = rows[("glibc-heap-only", OPTIMAL)]
    assert (failed.survived_runs, failed.step_ratio, failed.meets_target) == (0, None, False)
    assert failed.error is not None and failed.error.startswith("MemoryError")


def test_a_missing_jemalloc_is_named_before_anything_runs(tmp_path: Path) -> None:
    missing = tmp_path / "libjemalloc.so.2"
    with pytest.raises(AllocatorBenchError, match="libjemalloc2"):
        check_libraries(CANDIDATES, missing)
    check_libraries(candidates_named("glibc-hold"), missing)
    missing.write_bytes(b"")
    check_libraries(CANDIDATES, missing)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--candidates", "tcmalloc"], "unknown candidates"),
        (["--steps", "1"], "steps must be at least 2"),
        (["--budget-fraction", "1.5"], "budget fraction"),
        (["--model", "no_such_model"], "no_such_model"),
    ],
)
def test_the_command_refuses_bad_options_before_running(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["bench", "allocator", *args])
    assert result.exit_code == 2
    assert message in result.output
