"""Training children under a real memory cap: survivors report memory, the rest a clean result.

Each child spends most of its time importing torch, so the runs are made in module fixtures,
side by side where they do not depend on each other, and the tests check what they returned.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from checkpointing.planning.solvers.baselines import recompute_all
from edgefleet.harness.hardcap import (
    MEMORY_ERROR,
    OOM_KILL,
    CappedRun,
    CgroupError,
    HardCapError,
    JobError,
    TrainJob,
    available_mechanism,
    available_mechanisms,
    run_capped,
)

_MIB = 2**20
_GIB = 2**30
_TIMEOUT_S = 240.0
_GENEROUS_CAP_BYTES = 8 * _GIB
_LOW_CAP_BYTES = 200 * _MIB
_JOB: dict[str, Any] = {
    "model": "small_cnn",
    "num_classes": 10,
    "image_size": 32,
    "batch_size": 16,
    "schedule": None,
    "optimizer": "sgd",
    # Two steps: the optimizer's state exists from the second on.
    "steps": 2,
    "seed": 0,
    "teacher": None,
}
_CGROUP_V1_ROOT = Path("/sys/fs/cgroup/memory")
_HAS_CGROUP_V1 = available_mechanism() == "cgroup_v1"

needs_cgroup_v1 = pytest.mark.skipif(
    not _HAS_CGROUP_V1, reason="no writable cgroup v1 memory controller"
)

Outcome = CappedRun | HardCapError


def _our_cgroups() -> list[str]:
    prefix = f"edgefleet-hardcap-{os.getpid()}-"
    if not _CGROUP_V1_ROOT.is_dir():
        return []
    return [entry.name for entry in _CGROUP_V1_ROOT.iterdir() if entry.name.startswith(prefix)]


def _side_by_side(runs: dict[str, Callable[[], CappedRun]]) -> dict[str, Outcome]:
    def outcome(future: Future[CappedRun]) -> Outcome:
        try:
            return future.result()
        except HardCapError as error:
            return error

    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        futures = {name: pool.submit(run) for name, run in runs.items()}
        return {name: outcome(future) for name, future in futures.items()}


def _run(outcome: Outcome) -> CappedRun:
    assert isinstance(outcome, CappedRun), outcome
    return outcome


@pytest.fixture(scope="module")
def first_runs() -> dict[str, Outcome]:
    runs = {
        # Under a cap it fits in easily, with the machine's own mechanism (a cgroup here).
        "store_all": lambda: run_capped(_JOB, _GENEROUS_CAP_BYTES, _TIMEOUT_S),
        "unknown_model": lambda: run_capped(
            {**_JOB, "model": "no_such_model"}, _GENEROUS_CAP_BYTES, _TIMEOUT_S, mechanism="rlimit"
        ),
    }
    if _HAS_CGROUP_V1:
        runs["low_cap"] = lambda: run_capped(_JOB, _LOW_CAP_BYTES, _TIMEOUT_S)
    return _side_by_side(runs)


@pytest.fixture(scope="module")
def rlimit_runs(first_runs: dict[str, Outcome]) -> dict[str, Outcome]:
    store_all = _run(first_runs["store_all"]).result
    assert store_all is not None
    recompute = {**_JOB, "schedule": recompute_all(store_all["stages"]).to_strings()}
    # RLIMIT_AS caps address space: room for the small job's, but not for a first convolution
    # output of 1 GiB. The small job's figure varies by hundreds of MB with how many malloc
    # arenas its threads made, hence the wide gap.
    tight_cap_bytes = store_all["peak_vm_size_bytes"] + 128 * _MIB
    large_batch = {**_JOB, "image_size": 64, "batch_size": 4096, "steps": 1}
    return _side_by_side(
        {
            "recompute_all": lambda: run_capped(
                recompute, 64 * _GIB, _TIMEOUT_S, mechanism="rlimit"
            ),
            "large_batch": lambda: run_capped(
                large_batch, tight_cap_bytes, _TIMEOUT_S, mechanism="rlimit"
            ),
        }
    )


@needs_cgroup_v1
def test_generous_cap_survives_with_plausible_numbers(first_runs: dict[str, Outcome]) -> None:
    run = _run(first_runs["store_all"])

    result = run.result
    assert run.survived, run.stderr_tail
    assert (run.cap_mechanism, run.failure, run.exit_code) == ("cgroup_v1", None, 0)
    assert not run.killed_by_oom
    assert result is not None
    assert run.peak_rss_bytes == result["peak_rss_bytes"]
    assert result["peak_rss_bytes"] > result["baseline_rss_bytes"] > 100 * _MIB
    assert result["after_model_rss_bytes"] >= result["baseline_rss_bytes"]
    # The cgroup charges what the child allocated itself, within the cap.
    assert run.cgroup_peak_bytes is not None
    assert 50 * _MIB < run.cgroup_peak_bytes <= run.cap_bytes
    terms = result["terms"]
    assert terms["parameters_bytes"] == terms["gradients_bytes"] > 0
    # SGD with momentum keeps one buffer per parameter.
    assert terms["optimizer_state_bytes"] == terms["parameters_bytes"]
    assert result["live_peak_bytes"] > terms["input_batch_bytes"]
    assert result["live_tensor_peak_bytes"] > result["live_peak_bytes"] + terms["parameters_bytes"]
    assert result["allocator_overhead_bytes"] == result["peak_rss_bytes"] - (
        result["baseline_rss_bytes"] + result["live_tensor_peak_bytes"]
    )
    assert len(result["losses"]) == 2


@needs_cgroup_v1
def test_cap_below_the_runtime_is_killed_and_reported(first_runs: dict[str, Outcome]) -> None:
    run = _run(first_runs["low_cap"])

    assert not run.survived
    assert run.killed_by_oom and run.failure == OOM_KILL, run.stderr_tail
    assert (run.cap_bytes, run.cap_mechanism, run.result) == (_LOW_CAP_BYTES, "cgroup_v1", None)
    assert run.cgroup_peak_bytes is not None and run.cgroup_peak_bytes <= _LOW_CAP_BYTES
    # Sampled before the kill: a lower bound, the shared libraries included.
    assert run.peak_rss_bytes is not None and run.peak_rss_bytes > 0


@needs_cgroup_v1
def test_cgroups_are_removed_after_the_runs(first_runs: dict[str, Outcome]) -> None:
    left = _our_cgroups()

    assert left == []


def test_recompute_all_under_rlimit_survives_below_store_alls_activation_peak(
    first_runs: dict[str, Outcome], rlimit_runs: dict[str, Outcome]
) -> None:
    store_all = _run(first_runs["store_all"]).result
    run = _run(rlimit_runs["recompute_all"])

    assert run.survived, run.stderr_tail
    assert (run.cap_mechanism, run.cgroup_peak_bytes) == ("rlimit", None)
    assert run.result is not None and store_all is not None
    assert run.result["live_peak_bytes"] < store_all["live_peak_bytes"]
    # Same model, data and seed: the schedule changes memory, not the arithmetic.
    assert run.result["losses"] == pytest.approx(store_all["losses"], rel=1e-4)


def test_rlimit_below_what_the_step_needs_is_a_memory_error(
    rlimit_runs: dict[str, Outcome],
) -> None:
    run = _run(rlimit_runs["large_batch"])

    assert not run.survived
    assert (run.failure, run.exit_code, run.killed_by_oom) == (MEMORY_ERROR, 3, False)
    assert run.result is not None
    assert run.result["error"] == "MemoryError", run.stderr_tail


def test_job_the_child_rejects_is_an_error(first_runs: dict[str, Outcome]) -> None:
    outcome = first_runs["unknown_model"]

    assert isinstance(outcome, JobError)
    assert "no_such_model" in str(outcome)


@pytest.mark.parametrize(
    "fields",
    [
        {"batch_size": 0},
        {"steps": "2"},
        {"optimizer": "lbfgs"},
        {"schedule": "Fe_0"},
        {"image_size": True},
        {"epochs": 3},
    ],
)
def test_malformed_job_is_refused_before_anything_runs(fields: dict[str, Any]) -> None:
    with pytest.raises(JobError, match="job field"):
        run_capped({**_JOB, **fields}, _GENEROUS_CAP_BYTES, _TIMEOUT_S)


def test_job_round_trips_through_its_json_form() -> None:
    job = TrainJob.from_dict({**_JOB, "schedule": ["Fe_0", "Loss", "Bwd_0"], "teacher": "x"})

    again = TrainJob.from_dict(job.to_dict())

    assert again == job
    assert again.schedule == ("Fe_0", "Loss", "Bwd_0")


@pytest.mark.parametrize("cap_bytes", [0, -1, 1.5, True, "1GiB"])
def test_bad_cap_is_refused_before_anything_runs(cap_bytes: Any) -> None:
    with pytest.raises(HardCapError, match="cap_bytes"):
        run_capped(_JOB, cap_bytes, _TIMEOUT_S)


def test_cgroup_this_machine_lacks_is_a_clear_error() -> None:
    missing = [m for m in ("cgroup_v1", "cgroup_v2") if m not in available_mechanisms()]
    if not missing:
        pytest.skip("both cgroup memory controllers are writable here")

    with pytest.raises(CgroupError, match=f"no writable {missing[0]} memory controller"):
        run_capped(_JOB, _GIB, _TIMEOUT_S, mechanism=missing[0])  # type: ignore[arg-type]

    assert _our_cgroups() == []


def test_unknown_mechanism_is_refused() -> None:
    with pytest.raises(HardCapError, match="mechanism"):
        run_capped(_JOB, _GIB, _TIMEOUT_S, mechanism="ulimit")  # type: ignore[arg-type]
