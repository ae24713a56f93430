"""``edgefleet bench allocator``: the allocator candidates side by side on one training job.

Each candidate trains the same job in its own fresh child (``edgefleet.allocators.child``), for
two schedules: plain autograd (store-all) and the optimal checkpointing schedule at a fraction of
store-all's activation peak (the persistent solver on the model's fitted memory model). The
children run interleaved, every candidate once per schedule before any runs again, because this
machine is shared: time is compared as ratios to glibc's default within one run, never across
runs.

Per candidate and schedule: the child's peak RSS above its baseline (RSS after imports and the
agent's warm-up), the live tensor peak the accountant counted, the overhead ratio (the first over
the second, minus one), the median step time without each run's first step (it builds the
kernels' state) and its ratio to glibc's default. The target of issue 12 part 6: an overhead
ratio of at most 10 % at no more than 1.1 times glibc's default step time.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edgefleet.allocators.candidates import (
    CANDIDATES,
    JEMALLOC_PATH,
    REFERENCE,
    Candidate,
    child_environment,
)
from edgefleet.harness.hardcap import TrainJob
from edgefleet.progress import Report

STORE_ALL = "store_all"
OPTIMAL = "optimal"
SCHEDULES = (STORE_ALL, OPTIMAL)
TARGET_OVERHEAD_RATIO = 0.10
"""Peak above baseline at most 10 % over the live tensor peak."""
TARGET_STEP_RATIO = 1.10
"""Step time at most 1.1 times glibc's default."""

_CHILD_MODULE = "edgefleet.allocators.child"
_STDERR_TAIL_CHARS = 2000


class AllocatorBenchError(RuntimeError):
    """The benchmark cannot run: no schedule fits the budget, a preloaded library is missing."""


@dataclass(frozen=True)
class AllocatorBenchConfig:
    model: str = "mobilenet_v2"
    image_size: int = 224
    batch_size: int = 16
    steps: int = 8
    repeats: int = 2
    candidates: tuple[Candidate, ...] = CANDIDATES
    budget_fraction: float = 0.33
    """The optimal schedule's budget, a fraction of store-all's predicted activation peak."""
    num_classes: int = 1000
    timeout_s: float = 1800.0
    """Limit of each child."""

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("name a model")
        for name, least in (
            ("image_size", 8),
            ("batch_size", 1),
            ("steps", 2),
            ("repeats", 1),
            ("num_classes", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                # Two steps at least: the first is not timed.
                raise ValueError(f"{name.replace('_', '-')} must be at least {least}, got {value}")
        if not 0 < self.budget_fraction < 1:
            raise ValueError(f"budget fraction must be in (0, 1), got {self.budget_fraction}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout must be positive, got {self.timeout_s}")
        names = [candidate.name for candidate in self.candidates]
        if not names or names[0] != REFERENCE:
            raise ValueError(f"the candidates must start with {REFERENCE}, the reference")
        if len(set(names)) != len(names):
            raise ValueError(f"a candidate is listed twice: {names}")

    def job(self, schedule: tuple[str, ...] | None) -> TrainJob:
        return TrainJob(
            model=self.model,
            image_size=self.image_size,
            batch_size=self.batch_size,
            num_classes=self.num_classes,
            schedule=schedule,
            steps=self.steps,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["candidates"] = [
            {"name": c.name, "description": c.description, "settings": c.settings()}
            for c in self.candidates
        ]
        return data


@dataclass(frozen=True)
class PlannedSchedules:
    """What the children train: store-all, and the optimal schedule at the budget."""

    store_all_peak_bytes: int
    """Store-all's activation peak, predicted by the fitted memory model."""
    budget_bytes: int
    optimal_peak_bytes: int
    optimal: tuple[str, ...]
    stages: int

    def schedule(self, name: str) -> tuple[str, ...] | None:
        return self.optimal if name == OPTIMAL else None


def run_order(candidates: Sequence[Candidate], repeats: int) -> list[tuple[int, str, Candidate]]:
    """(repeat, schedule, candidate), every candidate in turn: A B C A B C..."""
    return [
        (repeat, schedule, candidate)
        for repeat in range(repeats)
        for schedule in SCHEDULES
        for candidate in candidates
    ]


@dataclass(frozen=True)
class RunResult:
    """One child: a candidate's run of a schedule."""

    candidate: str
    schedule: str
    repeat: int
    survived: bool
    baseline_rss_bytes: int = 0
    peak_above_baseline_bytes: int = 0
    live_tensor_peak_bytes: int = 0
    step_times_s: tuple[float, ...] = ()
    allocator: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def from_child(
        cls,
        candidate: str,
        schedule: str,
        repeat: int,
        exit_code: int,
        payload: Mapping[str, Any] | None,
        stderr_tail: str = "",
    ) -> RunResult:
        """What ``edgefleet.allocators.child`` wrote (None: nothing) and how it exited."""
        if exit_code != 0 or payload is None or payload.get("survived") is not True:
            if payload is not None and payload.get("error"):
                error = f"{payload['error']}: {payload.get('message', '')}"
            else:
                error = f"exit code {exit_code}: {stderr_tail.strip()[-_STDERR_TAIL_CHARS:]}"
            return cls(candidate, schedule, repeat, survived=False, error=error)
        baseline = int(payload["baseline_rss_bytes"])
        return cls(
            candidate,
            schedule,
            repeat,
            survived=True,
            baseline_rss_bytes=baseline,
            peak_above_baseline_bytes=int(payload["peak_rss_bytes"]) - baseline,
            live_tensor_peak_bytes=int(payload["live_tensor_peak_bytes"]),
            step_times_s=tuple(float(t) for t in payload["step_times_s"]),
            allocator=dict(payload.get("allocator", {})),
        )


@dataclass(frozen=True)
class Row:
    """A candidate on a schedule over its repeats: memory at its worst, time at its median."""

    candidate: str
    schedule: str
    runs: int
    survived_runs: int
    baseline_rss_bytes: int | None = None
    peak_above_baseline_bytes: int | None = None
    live_tensor_peak_bytes: int | None = None
    overhead_ratio: float | None = None
    median_step_s: float | None = None
    step_ratio: float | None = None
    """To glibc's default on the same schedule, in the same run."""
    meets_target: bool = False
    error: str | None = None


def summarise(runs: Sequence[RunResult], reference: str = REFERENCE) -> list[Row]:
    """One row per candidate and schedule, in the order the runs first name them."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for run in runs:
        groups.setdefault((run.candidate, run.schedule), []).append(run)
    partial = {key: _row(key, group) for key, group in groups.items()}
    rows = []
    for (_, schedule), row in partial.items():
        base = partial.get((reference, schedule))
        ratio = None
        if base is not None and base.median_step_s and row.median_step_s is not None:
            ratio = row.median_step_s / base.median_step_s
        meets = (
            row.overhead_ratio is not None
            and ratio is not None
            and row.overhead_ratio <= TARGET_OVERHEAD_RATIO
            and ratio <= TARGET_STEP_RATIO
        )
        rows.append(_with(row, step_ratio=ratio, meets_target=meets))
    return rows


def _row(key: tuple[str, str], group: Sequence[RunResult]) -> Row:
    candidate, schedule = key
    survived = [run for run in group if run.survived]
    if not survived:
        return Row(candidate, schedule, len(group), 0, error=group[0].error)
    # Memory at the worst repeat: a board's cap must hold the worst. Time pooled over repeats,
    # without each run's first step.
    peak = max(run.peak_above_baseline_bytes for run in survived)
    live = max(run.live_tensor_peak_bytes for run in survived)
    steps = [t for run in survived for t in run.step_times_s[1:]]
    return Row(
        candidate,
        schedule,
        runs=len(group),
        survived_runs=len(survived),
        baseline_rss_bytes=int(statistics.median(run.baseline_rss_bytes for run in survived)),
        peak_above_baseline_bytes=peak,
        live_tensor_peak_bytes=live,
        overhead_ratio=peak / live - 1 if live > 0 else None,
        median_step_s=statistics.median(steps) if steps else None,
        error=next((run.error for run in group if run.error), None),
    )


def _with(row: Row, **changes: Any) -> Row:
    return Row(**{**asdict(row), **changes})


@dataclass(frozen=True)
class AllocatorBenchResult:
    config: AllocatorBenchConfig
    schedules: PlannedSchedules
    runs: list[RunResult]
    rows: list[Row]
    machine: dict[str, Any]
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "target": {
                "overhead_ratio_at_most": TARGET_OVERHEAD_RATIO,
                "step_ratio_at_most": TARGET_STEP_RATIO,
            },
            "schedules": asdict(self.schedules),
            "rows": [asdict(row) for row in self.rows],
            "runs": [asdict(run) for run in self.runs],
            "machine": self.machine,
            "elapsed_s": self.elapsed_s,
        }


def check_libraries(candidates: Sequence[Candidate], jemalloc_path: Path = JEMALLOC_PATH) -> None:
    """``AllocatorBenchError`` when a candidate preloads a library that is not there: the loader
    would only warn, and the child would measure glibc under jemalloc's name."""
    needing = [c.name for c in candidates if c.jemalloc]
    if needing and not jemalloc_path.is_file():
        raise AllocatorBenchError(
            f"{', '.join(needing)} preload {jemalloc_path}, which is not there "
            "(Debian: apt-get install libjemalloc2); leave them out with --candidates"
        )


def plan_schedules(config: AllocatorBenchConfig, report: Report) -> PlannedSchedules:
    """Store-all's predicted activation peak, and the optimal schedule at the budget."""
    from checkpointing.planning.simulate import simulate
    from checkpointing.planning.solvers.baselines import store_all
    from checkpointing.planning.solvers.persistent import solve_persistent
    from edgefleet import measurements

    student = measurements.memory_model(config.model, config.num_classes, report)
    chain = student.predict(config.batch_size, config.image_size)
    store_peak = simulate(chain, store_all(chain.length)).peak
    budget = config.budget_fraction * store_peak
    solution = solve_persistent(chain, budget)
    if not solution.feasible or solution.schedule is None:
        raise AllocatorBenchError(
            f"no schedule of {config.model} fits {config.budget_fraction} of store-all's "
            f"activation peak; the least that does is {solution.min_budget / store_peak:.2f}"
        )
    return PlannedSchedules(
        store_all_peak_bytes=int(store_peak),
        budget_bytes=int(budget),
        optimal_peak_bytes=int(solution.peak),
        optimal=tuple(solution.schedule.to_strings()),
        stages=chain.length,
    )


def _arena_library(candidates: Sequence[Candidate]) -> Path | None:
    """The arena compiled from this checkout, when a candidate preloads it."""
    if not any(candidate.arena for candidate in candidates):
        return None
    from node_agent.arena import ArenaBuildError, build_arena

    try:
        return build_arena()
    except ArenaBuildError as error:
        raise AllocatorBenchError(f"{error}; or leave the arena out with --candidates") from None


def run_allocator_bench(config: AllocatorBenchConfig, report: Report) -> AllocatorBenchResult:
    check_libraries(config.candidates)
    arena_path = _arena_library(config.candidates)
    started = time.perf_counter()
    machine_before = _machine()
    schedules = plan_schedules(config, report)
    order = run_order(config.candidates, config.repeats)
    runs: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-allocator-") as scratch:
        for done, (repeat, schedule, candidate) in enumerate(order):
            report("training children", done, len(order))
            job = config.job(schedules.schedule(schedule))
            runs.append(
                _run_child(job, candidate, schedule, repeat, Path(scratch), config, arena_path)
            )
        report("training children", len(order), len(order))
    machine = {**machine_before, "load_average_after": list(os.getloadavg())}
    return AllocatorBenchResult(
        config, schedules, runs, summarise(runs), machine, time.perf_counter() - started
    )


def _run_child(
    job: TrainJob,
    candidate: Candidate,
    schedule: str,
    repeat: int,
    scratch: Path,
    config: AllocatorBenchConfig,
    arena_path: Path | None,
) -> RunResult:
    job_path = scratch / "job.json"
    result_path = scratch / "result.json"
    job_path.write_text(json.dumps(job.to_dict()))
    result_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", _CHILD_MODULE, str(job_path), str(result_path)]
    try:
        completed = subprocess.run(
            command,
            env=child_environment(candidate, os.environ, arena_path=arena_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=config.timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return RunResult(
            candidate.name,
            schedule,
            repeat,
            survived=False,
            error=f"timed out after {config.timeout_s:g} s",
        )
    try:
        payload = json.loads(result_path.read_text())
    except (OSError, json.JSONDecodeError):
        payload = None
    return RunResult.from_child(
        candidate.name, schedule, repeat, completed.returncode, payload, completed.stderr
    )


def _machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "load_average_before": list(os.getloadavg()),
        "platform": platform.platform(),
        "libc": " ".join(platform.libc_ver()),
        "python": platform.python_version(),
        "torch": metadata.version("torch"),
        "jemalloc": str(JEMALLOC_PATH) if JEMALLOC_PATH.is_file() else None,
    }
