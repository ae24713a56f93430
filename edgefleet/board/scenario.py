"""The seed paper's result on an emulated Raspberry Pi 3: ``edgefleet bench board --scenario
pi3-mobilenet``.

The seed raised MobileNet's training batch on a Raspberry Pi 3 from 4 to 12 with activation
checkpointing. This reproduces it with the board's own software (Debian arm64, PyPI's aarch64
torch 2.9.1) on an emulated Cortex-A53, as ``edgefleet bench budget`` proves a plan on x86:

1. measured on the board, under emulation, and cached in the board directory: MobileNetV2's
   memory model (profiled at batches 1 and 2, 64x64 and 128x128, predicting 224x224) and the
   training process's facts (runtime baseline and allocator overhead, from two training runs);
2. planned on the host (the solvers are numbers only): the cap is the ``raspberry-pi-3`` board
   class's budget, what a 1 GB Pi 3 leaves to the agent; the planner gives store-all's largest
   batch and its own, and the plan is re-checked against the allocator overhead measured on a
   run of the plan itself, as ``edgefleet.measurements.checked_plan`` does;
3. run on the board in a cgroup capped for real: one step of the plan, one step of store-all at
   the planned batch.

Under qemu-user the cgroup charges qemu's own memory (its translation cache and heap) with the
program's. qemu's share is measured on the check run (the uncapped run of the plan, step 2):
each reading of the guest's memory also gives the whole process's ``VmRSS``, and the largest
difference is the emulator allowance. The cgroup's limit is the Pi's cap plus that allowance;
the result reports the three figures.

The guest's peak is its own memory (``guest_sampler``: a thread in the guest reads the guest's
mappings every second; sampled, so a lower bound of the true peak by what is allocated and freed
between two readings), not qemu's high-water mark, which would count the emulator.

Every training run on the board (calibration, the plan's check, the capped runs) trains in the
process the agent trains in (``--allocator agent``, the default): glibc's mmap threshold fixed
after the imports and one warm-up step (``guest_training.Allocator``). The allocator sets the
overhead a plan holds beyond its tensors: under glibc's default, which keeps freed blocks in a
fragmenting heap, the recomputing plan held 1.31x its live tensors beyond them on the first run.
``--allocator glibc-default`` is that first run's process; its calibration and check are cached
under their old names, the agent's under names of their own. The memory model (the live
tensors' sizes) does not depend on the allocator and is shared.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from checkpointing.planning.budget import Optimizer, ProcessFacts
from checkpointing.planning.memory_model import MemoryModel
from checkpointing.planning.planner import Plan, PlanRequest, plan_training
from edgefleet.board.emulator import Board, BoardError, Emulation, run_guest
from edgefleet.board.guest_training import Allocator, GuestRun, run_on_board
from edgefleet.harness.calibrate import fit_process_facts, overhead_fraction
from edgefleet.harness.hardcap import TrainJob
from edgefleet.progress import Report

ARCH = "arm64"
UNCAPPED_LIMIT_BYTES = 16 * 2**30
"""The limit of measuring runs: far above what they use, so that nothing caps them."""
_PREDICTION_TOLERANCE = 0.10
_BATCH_RATIO_TARGET = 3.0


@dataclass(frozen=True)
class Scenario:
    """A model trained on a board class, and the sizes it is measured at under emulation."""

    name: str
    model: str
    num_classes: int
    image_size: int
    optimizer: Optimizer
    cpu: str
    board_class: str
    profile_batch_sizes: tuple[int, ...]
    profile_image_sizes: tuple[int, ...]
    calibration_batch_sizes: tuple[int, int]
    calibration_steps: int
    proof_steps: int
    """Steps of the check run and of each capped run: one, as a step takes minutes emulated."""

    def __post_init__(self) -> None:
        if self.num_classes < 2 or self.image_size < 8:
            raise ValueError(f"{self.name}: at least 2 classes and 8 pixels")
        low, high = self.calibration_batch_sizes
        if not 1 <= low < high:
            raise ValueError(f"{self.name}: calibration batch sizes must increase from 1 up")
        if self.calibration_steps < 1 or self.proof_steps < 1:
            raise ValueError(f"{self.name}: runs need at least one step")


PI3_MOBILENET = Scenario(
    name="pi3-mobilenet",
    model="mobilenet_v2",
    # The seed's classifier head is its task's; 10 classes keep the head small (12.8 KB of its
    # 8.9 MB of parameters), which does not change the activations checkpointing is about.
    num_classes=10,
    image_size=224,
    optimizer=Optimizer.SGD,
    cpu="cortex-a53",
    board_class="raspberry-pi-3",
    profile_batch_sizes=(1, 2),
    profile_image_sizes=(64, 128),
    calibration_batch_sizes=(2, 4),
    calibration_steps=2,
    proof_steps=1,
)
SCENARIOS = {scenario.name: scenario for scenario in (PI3_MOBILENET,)}


def scenario_named(name: str) -> Scenario:
    """The scenario called ``name``; ``ValueError`` naming the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(
            f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}"
        ) from None


@dataclass(frozen=True)
class CgroupLimit:
    """The cgroup's limit under emulation: the board's cap plus qemu's own measured share."""

    cap_bytes: int
    """What the board leaves to the agent (its class's budget): what the guest may hold."""
    emulator_allowance_bytes: int
    """qemu's own memory in the same kind of run, which a real board does not hold."""

    def __post_init__(self) -> None:
        if self.cap_bytes <= 0:
            raise ValueError(f"cap_bytes must be positive, got {self.cap_bytes}")
        if self.emulator_allowance_bytes < 0:
            raise ValueError(
                f"emulator_allowance_bytes must not be negative, got "
                f"{self.emulator_allowance_bytes}"
            )

    @property
    def limit_bytes(self) -> int:
        return self.cap_bytes + self.emulator_allowance_bytes


def refined_facts(facts: ProcessFacts, plan_fraction: float) -> ProcessFacts | None:
    """The facts with the plan's own overhead fraction where it is larger, else None."""
    if plan_fraction <= facts.allocator_overhead_fraction:
        return None
    return ProcessFacts(
        runtime_baseline_bytes=facts.runtime_baseline_bytes,
        allocator_overhead_fraction=plan_fraction,
        allocator_overhead_bytes=facts.allocator_overhead_bytes,
        model_library_bytes=facts.model_library_bytes,
    )


class MeasurementCache:
    """JSON files of one board build, core and scenario: a rerun does not measure again.

    Kept in the board directory (``measurements/``), keyed by the board's stamp (its Debian
    packages and pinned wheels), so a rebuilt board with other versions measures afresh. What
    a training process measured is also keyed by its allocator (``process_key``).
    """

    def __init__(self, board: Board, scenario: Scenario, allocator: Allocator) -> None:
        stamp = (board.directory / "board.stamp").read_bytes()
        digest = hashlib.sha256(stamp).hexdigest()[:12]
        self.directory = (
            board.directory / "measurements" / f"{scenario.name}-{scenario.cpu}-{digest}"
        )
        self.allocator = allocator

    def process_key(self, name: str) -> str:
        """The name of a measurement of the training process under this cache's allocator.

        glibc's default keeps the bare name: its measurements were cached under it before the
        allocator was a setting, and they stay valid for that setting.
        """
        if self.allocator is Allocator.GLIBC_DEFAULT:
            return name
        return f"{name}.{self.allocator.value}-allocator"

    def read(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.directory / f"{name}.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def write(self, name: str, data: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f"{name}.partial"
        partial.write_text(json.dumps(data, indent=1) + "\n")
        partial.replace(self.directory / f"{name}.json")  # a reader never sees half a file


@dataclass(frozen=True)
class RunSummary:
    """One capped or measuring run, in the guest's terms where it has them."""

    survived: bool
    failure: str | None
    killed_by_oom: bool
    batch_size: int
    peak_rss_bytes: int | None
    """The guest's own sampled peak (a killed run's: the largest reading before the kill)."""
    baseline_rss_bytes: int | None
    emulator_share_bytes: int | None
    process_peak_rss_bytes: int | None
    """The whole emulated process (qemu included): the child's VmHWM, or the parent's samples."""
    cgroup_peak_bytes: int | None
    live_tensor_peak_bytes: int | None
    step_s: list[float]
    wall_s: float
    agent_fix_applied: bool | None = None
    """Whether the agent's ``mallopt`` took in the child; None: not asked for, or no result (a
    run killed before writing one, or cached before the allocator was recorded)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(guest_run: GuestRun, batch_size: int) -> RunSummary:
    run, guest = guest_run.run, guest_run.guest
    result = run.result or {}
    live = result.get("live_tensor_peak_bytes")
    steps = result.get("step_times_s")
    return RunSummary(
        survived=run.survived,
        failure=run.failure,
        killed_by_oom=run.killed_by_oom,
        batch_size=batch_size,
        peak_rss_bytes=None if guest is None else guest.peak_rss_bytes,
        baseline_rss_bytes=None if guest is None else guest.baseline_rss_bytes,
        emulator_share_bytes=None if guest is None else guest.emulator_share_bytes,
        process_peak_rss_bytes=run.peak_rss_bytes,
        cgroup_peak_bytes=run.cgroup_peak_bytes,
        live_tensor_peak_bytes=live if isinstance(live, int) else None,
        step_s=[float(s) for s in steps] if isinstance(steps, list) else [],
        wall_s=run.wall_s,
        agent_fix_applied=guest_run.agent_fix_applied,
    )


def run_from_dict(data: dict[str, Any]) -> RunSummary:
    return RunSummary(**data)


@dataclass(frozen=True)
class ScenarioResult:
    """What ``--scenario`` prints: the plan and store-all under the cap, with the targets."""

    scenario: Scenario
    allocator: Allocator
    torch_version: str
    qemu_version: str
    limit: CgroupLimit
    cap_mechanism: str
    facts: ProcessFacts
    plan_overhead_fraction: float
    plan: Plan
    plan_run: RunSummary
    store_all_run: RunSummary
    measurement_s: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        scenario, plan = self.scenario, self.plan
        predicted = plan.predicted_peak_bytes
        measured = self.plan_run.peak_rss_bytes
        ratio = plan.batch_size / plan.store_all_max_batch if plan.store_all_max_batch else None
        within_tolerance = (
            measured is not None and abs(measured - predicted) <= _PREDICTION_TOLERANCE * predicted
        )
        return {
            "scenario": scenario.name,
            "arch": ARCH,
            "cpu": scenario.cpu,
            "board_class": scenario.board_class,
            "torch_version": self.torch_version,
            "qemu_version": self.qemu_version,
            "model": scenario.model,
            "num_classes": scenario.num_classes,
            "image_size": scenario.image_size,
            "optimizer": scenario.optimizer.value,
            "allocator": self.allocator.value,
            "cap_bytes": self.limit.cap_bytes,
            "emulator_allowance_bytes": self.limit.emulator_allowance_bytes,
            "cgroup_limit_bytes": self.limit.limit_bytes,
            "cap_mechanism": self.cap_mechanism,
            "store_all_max_batch": plan.store_all_max_batch,
            "planned_batch": plan.batch_size,
            "batch_ratio": ratio,
            "facts": {
                **asdict(self.facts),
                "plan_overhead_fraction": self.plan_overhead_fraction,
            },
            "plan": {
                **self.plan_run.to_dict(),
                "strategy": plan.strategy,
                "predicted_peak_bytes": predicted,
                "prediction_error": None if not measured else predicted / measured - 1,
                "within_budget": self.plan_run.survived
                and measured is not None
                and measured <= self.limit.cap_bytes,
                "time_overhead": plan.time_overhead,
                "terms": plan.terms.as_dict(),
                "schedule_operations": len(plan.schedule.to_strings()),
            },
            "store_all_at_planned_batch": self.store_all_run.to_dict(),
            "targets": {
                "planned_at_least_3x_store_all": ratio is not None and ratio >= _BATCH_RATIO_TARGET,
                "plan_survives_within_10_percent": self.plan_run.survived and within_tolerance,
                "store_all_killed": not self.store_all_run.survived,
            },
            "measurement_s": self.measurement_s,
        }


def measure_memory_model(
    board: Board, emulation: Emulation, scenario: Scenario, cache: MeasurementCache
) -> tuple[MemoryModel, str, float]:
    """The fitted model, the guest's torch version and the profiling time (cached)."""
    cached = cache.read("memory-model")
    if cached is None:
        stdout = run_guest(
            board,
            emulation,
            [
                "-m",
                "edgefleet.board.guest_profile",
                scenario.model,
                str(scenario.num_classes),
                ",".join(map(str, scenario.profile_batch_sizes)),
                ",".join(map(str, scenario.profile_image_sizes)),
            ],
        )
        try:
            cached = json.loads(stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError) as error:
            raise BoardError(f"the profile's output is not JSON: {stdout[-2000:]}") from error
        if not isinstance(cached, dict) or cached.get("machine") != "aarch64":
            raise BoardError(f"the profile did not run as aarch64: {stdout[-300:]}")
        cache.write("memory-model", cached)
    model = MemoryModel.from_dict(cached["memory_model"])
    return model, str(cached["torch_version"]), float(cached["profile_s"])


def _job(
    scenario: Scenario, batch_size: int, schedule: tuple[str, ...] | None, steps: int
) -> TrainJob:
    return TrainJob(
        model=scenario.model,
        image_size=scenario.image_size,
        batch_size=batch_size,
        num_classes=scenario.num_classes,
        schedule=schedule,
        optimizer=scenario.optimizer.value,
        steps=steps,
    )


def _measuring_run(
    board: Board,
    emulation: Emulation,
    job: TrainJob,
    work_dir: Path,
    what: str,
    allocator: Allocator,
) -> GuestRun:
    guest_run = run_on_board(
        board, emulation, job, UNCAPPED_LIMIT_BYTES, work_dir, allocator=allocator
    )
    run = guest_run.run
    if not run.survived or guest_run.guest is None or guest_run.overhead_bytes is None:
        raise BoardError(
            f"the {what} run at batch {job.batch_size} failed on the board ({run.failure}): "
            f"{run.stderr_tail[-1500:]}"
        )
    check_allocator(guest_run, allocator, what)
    return guest_run


def check_allocator(guest_run: GuestRun, allocator: Allocator, what: str) -> None:
    """``BoardError`` where a finished run's process is not the one asked for: a fix that did
    not take would measure glibc's default under the agent's name."""
    applied = guest_run.agent_fix_applied
    if allocator is Allocator.AGENT and applied is not True:
        raise BoardError(
            f"the {what} run did not train in the agent's process: the allocator fix was "
            f"{'not applied' if applied is False else 'not reported'} (no mallopt in the "
            "board's libc, or the child was not edgefleet.allocators.child)"
        )
    if allocator is Allocator.GLIBC_DEFAULT and applied is not None:
        raise BoardError(f"the {what} run applied the agent's fix under glibc-default")


def measure_process_facts(
    board: Board,
    emulation: Emulation,
    scenario: Scenario,
    cache: MeasurementCache,
    work_dir: Path,
    report: Report,
) -> tuple[ProcessFacts, float]:
    """The training process's facts in the guest's terms, under the cache's allocator, and the
    time they took (cached)."""
    key = cache.process_key("process")
    cached = cache.read(key)
    if cached is None:
        started = time.monotonic()
        readings: list[tuple[int, int, int]] = []
        runs: list[dict[str, Any]] = []
        for done, batch in enumerate(scenario.calibration_batch_sizes):
            report("calibrating the process", done, 2)
            job = _job(scenario, batch, None, scenario.calibration_steps)
            guest_run = _measuring_run(
                board, emulation, job, work_dir, "calibration", cache.allocator
            )
            summary = summarize(guest_run, batch)
            assert guest_run.guest is not None and guest_run.overhead_bytes is not None
            assert summary.live_tensor_peak_bytes is not None
            readings.append(
                (
                    guest_run.guest.baseline_rss_bytes,
                    summary.live_tensor_peak_bytes,
                    guest_run.overhead_bytes,
                )
            )
            runs.append(summary.to_dict())
        report("calibrating the process", 2, 2)
        facts = fit_process_facts(readings)
        cached = {
            "facts": asdict(facts),
            "allocator": cache.allocator.value,
            "runs": runs,
            "wall_s": time.monotonic() - started,
        }
        cache.write(key, cached)
    return ProcessFacts(**cached["facts"]), float(cached["wall_s"])


@dataclass(frozen=True)
class CheckedPlan:
    plan: Plan
    facts: ProcessFacts
    plan_fraction: float
    emulator_allowance_bytes: int
    check_s: float


def check_plan(
    board: Board,
    emulation: Emulation,
    scenario: Scenario,
    student: MemoryModel,
    request: PlanRequest,
    facts: ProcessFacts,
    cache: MeasurementCache,
    work_dir: Path,
    report: Report,
) -> CheckedPlan:
    """Plan, run the plan once uncapped to measure its overhead and qemu's share, plan again
    with the overhead where it is larger (``checked_plan``'s rule). Cached per batch."""
    plan = plan_training(student, request, facts)
    key = cache.process_key(f"check-b{plan.batch_size}-{plan.strategy}")
    cached = cache.read(key)
    if cached is None:
        report("checking the plan", 0, 1)
        started = time.monotonic()
        job = _job(
            scenario, plan.batch_size, tuple(plan.schedule.to_strings()), scenario.proof_steps
        )
        guest_run = _measuring_run(board, emulation, job, work_dir, "plan check", cache.allocator)
        summary = summarize(guest_run, plan.batch_size)
        assert guest_run.overhead_bytes is not None and summary.live_tensor_peak_bytes is not None
        assert summary.emulator_share_bytes is not None
        cached = {
            "fraction": overhead_fraction(guest_run.overhead_bytes, summary.live_tensor_peak_bytes),
            "allocator": cache.allocator.value,
            "emulator_share_bytes": summary.emulator_share_bytes,
            "run": summary.to_dict(),
            "wall_s": time.monotonic() - started,
        }
        cache.write(key, cached)
        report("checking the plan", 1, 1)
    fraction = float(cached["fraction"])
    refined = refined_facts(facts, fraction)
    if refined is not None:
        plan = plan_training(student, request, refined)
    return CheckedPlan(
        plan=plan,
        facts=facts,
        plan_fraction=fraction,
        emulator_allowance_bytes=int(cached["emulator_share_bytes"]),
        check_s=float(cached["wall_s"]),
    )


def run_scenario(
    board: Board,
    emulation: Emulation,
    scenario: Scenario,
    cap_bytes: int,
    qemu_version: str,
    report: Report,
    allocator: Allocator = Allocator.AGENT,
) -> ScenarioResult:
    """Measure (or read the cache), plan, and run the plan and store-all under the cap, every
    training run in the process ``allocator`` names."""
    cache = MeasurementCache(board, scenario, allocator)
    work_dir = cache.directory / "work"
    report("profiling the model", 0, 1)
    student, torch_version, profile_s = measure_memory_model(board, emulation, scenario, cache)
    report("profiling the model", 1, 1)
    facts, calibration_s = measure_process_facts(
        board, emulation, scenario, cache, work_dir, report
    )
    request = PlanRequest(
        image_size=scenario.image_size, budget_bytes=cap_bytes, optimizer=scenario.optimizer
    )
    checked = check_plan(
        board, emulation, scenario, student, request, facts, cache, work_dir, report
    )
    plan = checked.plan
    limit = CgroupLimit(cap_bytes, checked.emulator_allowance_bytes)
    report("capped runs", 0, 2)
    planned = run_on_board(
        board,
        emulation,
        _job(scenario, plan.batch_size, tuple(plan.schedule.to_strings()), scenario.proof_steps),
        limit.limit_bytes,
        work_dir,
        allocator=allocator,
    )
    report("capped runs", 1, 2)
    store_all = run_on_board(
        board,
        emulation,
        _job(scenario, plan.batch_size, None, scenario.proof_steps),
        limit.limit_bytes,
        work_dir,
        allocator=allocator,
    )
    report("capped runs", 2, 2)
    return ScenarioResult(
        scenario=scenario,
        allocator=allocator,
        torch_version=torch_version,
        qemu_version=qemu_version,
        limit=limit,
        cap_mechanism=planned.run.cap_mechanism,
        facts=checked.facts,
        plan_overhead_fraction=checked.plan_fraction,
        plan=plan,
        plan_run=summarize(planned, plan.batch_size),
        store_all_run=summarize(store_all, plan.batch_size),
        measurement_s={
            "profile_s": profile_s,
            "calibration_s": calibration_s,
            "check_s": checked.check_s,
        },
    )
