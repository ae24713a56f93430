"""The fleet demo end to end: a coordinator, four capped board agents, one job, watched to the end.

1. The teacher and the eye-level student are trained once and cached (``edgefleet.demo.models``).
2. Each board gets its own unlabelled frames, rendered from its viewpoint and cached, and the
   teacher's weights; its evaluation frames stay in this process, only to measure.
3. The agent's runtime baseline is measured in a fresh child; each board's cap is that baseline
   plus what its kind of board leaves to training (``boards``), enforced by a cgroup.
4. A coordinator starts in this process on 127.0.0.1 (SQLite in the run's folder); the agents
   start as separate processes, register, profile and get their plans.
5. The job goes in through the jobs API; every new model version is downloaded and scored on
   each board's own viewpoint as the rounds close.
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import torch
from safetensors.torch import load, load_file, save_file
from torch import nn

from checkpointing.execution.models import build_model
from edgefleet.demo.boards import BOARDS, DemoBoard
from edgefleet.demo.capped import CappedAgent, agent_command, agent_environment, capped_agents
from edgefleet.demo.models import (
    DEMO,
    DemoSettings,
    ensure_pretrained,
    evaluate,
    load_weights,
)
from edgefleet.demo.report import BoardOutcome, DemoResult
from edgefleet.job_events import describe
from edgefleet.jobs_client import JobsClient
from node_agent.arena import ArenaBuildError, build_arena
from orchestrator.config import Address, CoordinatorConfig
from orchestrator.server import running
from protos.edgefleet.v1 import common_pb2, jobs_pb2
from protos.vocabulary import OPTIMIZER

Say = Callable[[str], None]

_TERMINAL = (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED)
EvalSet = tuple[torch.Tensor, torch.Tensor]
"""Frames and their labels."""
_POLL_S = 5.0
"""How often the agents and the plans are looked at between events."""


class DemoError(RuntimeError):
    """The demo could not run to the end (the message says what went wrong, and where)."""


@dataclass(frozen=True)
class DemoConfig:
    data_dir: Path
    """Caches (pretrained models, rendered frames) and this run's folder, ``run/``."""
    settings: DemoSettings = DEMO
    boards: tuple[DemoBoard, ...] = BOARDS
    batch_size: int | None = None
    """The job's batch; None asks each board for the largest that fits its memory (the
    product's point: where checkpointing stretches a board's batch beyond store-all's)."""
    local_steps: int = 20
    """Optimizer steps per board per round. A Raspberry Pi 3's share holds batches of about
    200 frames here, so a step costs a few seconds of this machine's time: 20 steps see about
    two times a board's frames, and the demo stays within ten minutes."""
    rounds: int = 8
    """Rounds of the job: with two boards a round, each board trains in about four."""
    boards_per_round: int = 2
    """Boards sampled for each round (FedAvg's fraction of clients): with two of four, each
    board that trains has a core of its own, and a round makes twice the sequential steps
    that all four boards sharing the two cores would make in the same time."""
    learning_rate: float = 0.1
    """SGD's step for the boards' batches, twice the settings' (measured there at batch 32):
    a batch several times larger carries a less noisy gradient."""
    round_deadline_s: float = 300.0
    workers: int = 2
    """Processes rendering frames (the agents run one thread each, see ``capped``)."""
    timeout_s: float = 1200.0
    """The whole job, from submission to its end."""

    def __post_init__(self) -> None:
        viewpoints = tuple(board.viewpoint for board in self.boards)
        if viewpoints != self.settings.boards:
            raise ValueError(
                f"the boards' viewpoints {viewpoints} differ from the settings' "
                f"{self.settings.boards}"
            )
        if len({board.name for board in self.boards}) != len(self.boards):
            raise ValueError("board names must differ")
        if not self.round_deadline_s > 0 or not self.timeout_s > 0:
            raise ValueError("round_deadline_s and timeout_s must be positive")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be positive, got {self.rounds}")
        if not 1 <= self.boards_per_round <= len(self.boards):
            raise ValueError(
                f"boards_per_round must be between 1 and {len(self.boards)}, "
                f"got {self.boards_per_round}"
            )
        if self.local_steps < 1:
            raise ValueError(f"local_steps must be positive, got {self.local_steps}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")


@dataclass
class _Observed:
    """What the job's events told, per node id."""

    measured_peak_bytes: dict[str, int] = field(default_factory=dict)
    predicted_peak_bytes: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    plans: dict[str, tuple[jobs_pb2.Node, common_pb2.Plan]] = field(default_factory=dict)
    """Per board name, its node and the latest plan seen for the job."""
    final_state: int = jobs_pb2.JOB_STATE_UNSPECIFIED
    final_message: str = ""

    def note_plans(self, nodes: list[jobs_pb2.Node], job_id: str) -> None:
        """Keep each board's plan; a board whose plan cannot fit is never scheduled, so say so
        rather than wait for it."""
        for node in nodes:
            for plan in node.plans:
                if plan.job_id != job_id:
                    continue
                if not plan.fits:
                    raise DemoError(f"{node.node_name} cannot train within its cap: {plan.message}")
                self.plans[node.node_name] = (node, plan.plan)

    def note(self, event: jobs_pb2.JobEvent) -> None:
        if event.HasField("update_received") and event.update_received.accepted:
            update = event.update_received
            self.measured_peak_bytes[update.node_id] = max(
                self.measured_peak_bytes.get(update.node_id, 0), update.measured_peak_bytes
            )
            self.predicted_peak_bytes[update.node_id] = update.predicted_peak_bytes
        elif event.HasField("node_failed"):
            self.failures.append(describe(event))
        elif event.HasField("state_changed") and event.state_changed.state in _TERMINAL:
            self.final_state = event.state_changed.state
            self.final_message = event.state_changed.message


def _agent_baseline_bytes(environment: dict[str, str]) -> int:
    """A fresh agent process's warmed runtime, one thread as the demo's agents run."""
    command = [
        sys.executable,
        "-m",
        "edgefleet.cli",
        "agent",
        "baseline",
        "--threads",
        "1",
        "--json",
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, check=False, env=environment
    )
    if completed.returncode != 0:
        raise DemoError(f"measuring the agent's baseline failed: {completed.stderr[-2000:]}")
    return int(json.loads(completed.stdout)["runtime_baseline_bytes"])


def _arena_library(say: Say) -> Path | None:
    """The plan-aware arena for the agents, built once; None (glibc, the agent's fixed
    threshold) where no C compiler is here, which the demo says."""
    try:
        library = build_arena()
    except ArenaBuildError as error:
        say(f"the agents run without the plan-aware arena: {error}")
        return None
    say(f"the agents preload the plan-aware arena ({library})")
    return library


def _board_frames(config: DemoConfig, index: int, say: Say) -> Path:
    """The board's unlabelled frames as PNG files, rendered once per settings and kept."""
    settings = config.settings
    frame_set = settings.board_train_set(index)
    key = f"{frame_set.viewpoint}-{frame_set.count}-{frame_set.seed}-{settings.image_size}px"
    folder = config.data_dir / "frames" / key
    done = folder / ".complete"
    if not done.is_file():
        say(f"rendering {frame_set.count} frames for {config.boards[index].name}")
        shutil.rmtree(folder, ignore_errors=True)
        frame_set.write(folder, settings.image_size, labelled=False, workers=config.workers)
        done.touch()
    return folder


def _eval_set(config: DemoConfig, index: int, say: Say) -> EvalSet:
    """The board's labelled evaluation frames, rendered once per settings and kept (they stay
    in this process: no board ever sees them)."""
    settings = config.settings
    frame_set = settings.board_eval_set(index)
    key = f"{frame_set.viewpoint}-{frame_set.count}-{frame_set.seed}-{settings.image_size}px"
    path = config.data_dir / "frames" / f"eval-{key}.safetensors"
    if path.is_file():
        stored = load_file(str(path))
        return stored["frames"], stored["labels"]
    say(f"rendering {frame_set.count} evaluation frames for {config.boards[index].name}")
    frames, labels = frame_set.render(settings.image_size, config.workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file({"frames": frames, "labels": labels}, str(partial))
    partial.replace(path)
    return frames, labels


def _board_folder(run_dir: Path, board: DemoBoard, teacher_weights: Path, name: str) -> Path:
    """A fresh data folder for the board's agent, holding the teacher's weights."""
    folder = run_dir / "boards" / board.name
    (folder / "weights").mkdir(parents=True)
    shutil.copyfile(teacher_weights, folder / "weights" / f"{name}.safetensors")
    return folder


def _accuracies(
    model: nn.Module, eval_sets: list[tuple[torch.Tensor, torch.Tensor]]
) -> list[float]:
    return [evaluate(model, frames, labels) for frames, labels in eval_sets]


def _model_from(data: bytes, settings: DemoSettings) -> nn.Module:
    model = build_model(settings.student, settings.num_classes)
    model.load_state_dict(load(data))
    return model.eval()


def _job_spec(config: DemoConfig, digest: str) -> jobs_pb2.JobSpec:
    settings = config.settings
    return jobs_pb2.JobSpec(
        name="fleet demo: pole viewpoints",
        student_model=settings.student,
        teacher_model=settings.teacher,
        image_size=settings.image_size,
        num_classes=settings.num_classes,
        batch_size=config.batch_size or 0,
        num_rounds=config.rounds,
        local_steps=config.local_steps,
        optimizer=OPTIMIZER.to_proto(settings.optimizer),
        learning_rate=config.learning_rate,
        node_fraction=config.boards_per_round / len(config.boards),
        min_nodes=config.boards_per_round,
        round_deadline_s=config.round_deadline_s,
        aggregation=jobs_pb2.AGGREGATION_RULE_FEDAVG,
        temperature=settings.temperature,
        initial_weights_sha256_hex=digest,
    )


def _new_model(event: jobs_pb2.JobEvent) -> bool:
    return (
        event.HasField("round_completed")
        and event.round_completed.outcome != jobs_pb2.ROUND_OUTCOME_FAILED
    )


def _check_agents(agents: list[CappedAgent]) -> None:
    for agent in agents:
        if not agent.alive():
            tail = agent.log.read_text(errors="replace")[-2000:]
            raise DemoError(
                f"the agent of {agent.name} exited with status {agent.process.returncode}; "
                f"the end of its log ({agent.log}):\n{tail}"
            )


def _follow(
    client: JobsClient,
    job_id: str,
    config: DemoConfig,
    agents: list[CappedAgent],
    eval_sets: list[EvalSet],
    accuracy_by_round: dict[str, list[float]],
    observed: _Observed,
    say: Say,
) -> None:
    """Watch the job to its end, scoring each new model version on every board's viewpoint;
    between events, look at the agents and the plans (``DemoError`` on anything wrong)."""
    deadline = time.monotonic() + config.timeout_s
    seen = 0
    while observed.final_state == jobs_pb2.JOB_STATE_UNSPECIFIED:
        for event in client.watch_for(job_id, _POLL_S, seen):
            seen = event.sequence
            say(describe(event))
            observed.note(event)
            if event.HasField("round_started"):
                # The round's boards were just planned: their plans are listed while the job
                # runs (a finished job's are not).
                observed.note_plans(client.list_nodes(), job_id)
            if _new_model(event):
                model = _model_from(client.download_model(job_id), config.settings)
                scores = _accuracies(model, eval_sets)
                for board, score in zip(config.boards, scores, strict=True):
                    accuracy_by_round[board.name].append(score)
                say("accuracy per board: " + ", ".join(f"{x:.1%}" for x in scores))
        _check_agents(agents)
        observed.note_plans(client.list_nodes(), job_id)
        if time.monotonic() > deadline:
            raise DemoError(f"the job did not end within {config.timeout_s:.0f} s")
    if observed.final_state != jobs_pb2.JOB_STATE_SUCCEEDED:
        raise DemoError(f"the job did not succeed: {observed.final_message}")


def run_demo(config: DemoConfig, say: Say) -> tuple[DemoResult, dict[str, float]]:
    """The demo's figures, and the teacher's accuracy per board (the plot's ceilings)."""
    started = time.monotonic()
    settings = config.settings
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DemoError(f"cannot use {config.data_dir} as the demo's folder: {error}") from None
    pretrained = ensure_pretrained(
        config.data_dir / "pretrained", settings, config.workers, progress=say
    )
    frames = [_board_frames(config, index, say) for index in range(len(config.boards))]
    eval_sets = [_eval_set(config, index, say) for index in range(len(config.boards))]
    environment = agent_environment(_arena_library(say))
    say("measuring the agent's runtime baseline in a fresh process")
    baseline = _agent_baseline_bytes(environment)
    # From here on the agents have the cores (one thread each); scoring here takes one.
    torch.set_num_threads(1)
    teacher = load_weights(settings.teacher, pretrained.teacher)
    teacher_by_board = _accuracies(teacher, eval_sets)
    before = _accuracies(load_weights(settings.student, pretrained.student), eval_sets)

    run_dir = config.data_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    coordinator_config = CoordinatorConfig(
        data_dir=run_dir / "coordinator",
        enrollment_token=secrets.token_hex(16),
        admin_token=secrets.token_hex(16),
        listen=Address("127.0.0.1", 0),
        tick_s=0.2,
        idle_pull_interval_s=0.5,
        heartbeat_timeout_s=120.0,
        fsync=False,
        # The same boards train in the same rounds on every run of the demo.
        selection_seed=settings.seed,
    )
    accuracy_by_round = {
        board.name: [acc] for board, acc in zip(config.boards, before, strict=True)
    }
    observed = _Observed()
    with running(coordinator_config, grace_s=1.0) as server:
        say(f"coordinator listening on {server.address}")
        specs = []
        for index, board in enumerate(config.boards):
            folder = _board_folder(run_dir, board, pretrained.teacher, settings.teacher)
            cap = board.cap_bytes(baseline)
            command = agent_command(
                server.address, folder, cap, board.kind.hardware_class, board.name, frames[index]
            )
            specs.append((board.name, cap, command, folder / "agent.log"))
        with (
            capped_agents(specs, coordinator_config.enrollment_token, environment) as agents,
            grpc.insecure_channel(server.address) as channel,
        ):
            client = JobsClient(channel, coordinator_config.admin_token)
            digest = client.upload_weights(pretrained.student.read_bytes())
            job = client.submit(_job_spec(config, digest))
            say(f"submitted job {job.job_id}: {config.rounds} rounds on {len(agents)} boards")
            _follow(client, job.job_id, config, agents, eval_sets, accuracy_by_round, observed, say)
    outcomes = []
    for index, (board, agent) in enumerate(zip(config.boards, agents, strict=True)):
        if board.name not in observed.plans:
            raise DemoError(f"{board.name} was never given a plan")
        node, plan = observed.plans[board.name]
        outcomes.append(
            BoardOutcome(
                name=board.name,
                hardware_class=node.hardware_class,
                cap_bytes=agent.cap_bytes,
                training_share_bytes=board.kind.training_bytes,
                batch_size=plan.batch_size,
                store_all_max_batch=plan.store_all_max_batch_size,
                strategy=plan.strategy,
                predicted_peak_bytes=plan.predicted_peak_bytes,
                measured_peak_bytes=observed.measured_peak_bytes.get(node.node_id, 0),
                accuracy_before=before[index],
                accuracy_after=accuracy_by_round[board.name][-1],
            )
        )
    result = DemoResult(
        boards=outcomes,
        teacher_accuracy=sum(teacher_by_board) / len(teacher_by_board),
        fleet_accuracy_before=sum(o.accuracy_before for o in outcomes) / len(outcomes),
        fleet_accuracy_after=sum(o.accuracy_after for o in outcomes) / len(outcomes),
        elapsed_s=time.monotonic() - started,
        accuracy_by_round=accuracy_by_round,
        oom_kills=sum(agent.oom_kills or 0 for agent in agents),
        runtime_baseline_bytes=baseline,
    )
    return result, {b.name: t for b, t in zip(config.boards, teacher_by_board, strict=True)}
