"""The agent: registers the board, keeps it alive, pulls tasks and runs them until stopped.

One thread pulls and works (profile tasks, train tasks); another heartbeats, reporting the task
in hand and the process's resident memory, and learns of cancelled jobs. Every call to the
coordinator that fails because it cannot be reached is retried with capped exponential backoff
and jitter until it succeeds or the agent is stopped; an update already computed waits in the
outbox on disk and is delivered once the coordinator answers again, never recomputed or lost.

Stopping (``stop`` set, on SIGTERM) ends the task in hand at its next pass: a train task is
reported as abandoned so its round need not wait for the deadline, and the agent returns.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import TypeVar

import grpc
import torch
from torch import nn

from checkpointing.execution.models import build_model
from checkpointing.execution.process_memory import peak_rss_bytes, reset_peak_rss, rss_bytes
from checkpointing.execution.training import is_out_of_memory
from node_agent import identity as identity_store
from node_agent.arena import Arena
from node_agent.backoff import Backoff
from node_agent.board_classes import BoardClass, device_tree_model, recognise
from node_agent.cgroup_limit import cgroup_memory_limit_bytes
from node_agent.client import FleetClient, open_channel
from node_agent.config import AgentConfig
from node_agent.frames import FramesError, load_frames, native_side
from node_agent.hardware import detect, ram_bytes
from node_agent.memory_budget import MemoryBudget, resolve_budget
from node_agent.outbox import Outbox, PendingUpdate
from node_agent.profiling import run_profile
from node_agent.runtime import RuntimeBaseline, measure_runtime
from node_agent.trainer import InvalidTask, MemoryGuardTripped, TaskStopped, train_round
from node_agent.weights import WeightsError, load_into, read_state_dict, weights_file
from protos.edgefleet.v1 import common_pb2, fleet_pb2
from protos.transfer import TransferError

_LOG = logging.getLogger(__name__)
_TRANSIENT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
)
_UPLOAD_ATTEMPTS = 3
T = TypeVar("T")


class EnrollmentRefused(Exception):
    """The coordinator does not accept this fleet's enrollment token."""


class AgentStopping(Exception):
    """The agent was asked to stop while it waited for the coordinator."""


def agent_version() -> str:
    try:
        return metadata.version("edgefleet")
    except metadata.PackageNotFoundError:
        return "dev"


@dataclass(frozen=True)
class Startup:
    """What the agent learns of its own process and board before it dials the coordinator."""

    runtime: RuntimeBaseline
    """Private memory plus file allowance after the warm-up and the frames (logged beside)."""
    runtime_baseline_bytes: int
    """The whole RSS then: what the coordinator plans training above."""
    board: BoardClass | None
    budget: MemoryBudget
    arena: Arena | None
    frames: dict[int, torch.Tensor]
    """The board's frames at the camera's own size, loaded before the baseline was read."""


def start_up(config: AgentConfig) -> Startup:
    """Warm the runtime up, load the frames, then read the baseline and resolve the budget."""
    runtime = measure_runtime(config.threads)
    frames = _preloaded_frames(config)
    board = recognise(device_tree_model(), ram_bytes())
    # Everything this process holds before any model, the board's frames included, is the
    # runtime baseline the coordinator plans training above. Planned and guarded in whole RSS
    # (VmRSS, VmHWM) still: with private memory plus the file allowance the demo's steps
    # overshot their plans by 40-70 MB of private memory that no profile term covers yet
    # (docs/agent.md); the steadier figures are logged.
    return Startup(
        runtime=runtime.remeasured(),
        runtime_baseline_bytes=rss_bytes(),
        board=board,
        budget=_memory_budget(config, board),
        arena=Arena.loaded(),
        frames=frames,
    )


def _preloaded_frames(config: AgentConfig) -> dict[int, torch.Tensor]:
    """The frames at the camera's own size, held from the start: tasks at that size (the usual
    case) add nothing to what the baseline measured."""
    side = native_side(config.frames)
    if side is None:
        return {}
    try:
        loaded = load_frames(config.frames, side)
    except FramesError as error:
        _LOG.warning("frames not preloaded: %s", error)
        return {}
    if loaded.skipped:
        _LOG.warning("%d frames skipped (unreadable)", len(loaded.skipped))
    return {side: loaded.images}


def _memory_budget(config: AgentConfig, board: BoardClass | None) -> MemoryBudget:
    limit = cgroup_memory_limit_bytes()
    # A limit at or above the RAM limits nothing the RAM does not.
    if limit is not None and limit >= ram_bytes():
        limit = None
    return resolve_budget(config.memory_budget_bytes, limit, board)


class Agent:
    """One board's agent: ``start`` measures and connects, ``run`` works until stopped. The
    constructor only keeps what it is given."""

    def __init__(
        self,
        config: AgentConfig,
        stop: threading.Event,
        startup: Startup,
        channel: grpc.Channel,
    ) -> None:
        self._config = config
        self._stop = stop
        self._arena = startup.arena
        self._channel = channel
        self._client = FleetClient(channel)
        self._outbox = Outbox(config.data_dir)
        self._current_task = ""
        self._current_job = ""
        self._cancelled = threading.Event()
        self._teachers: dict[tuple[str, int], nn.Module] = {}
        self._frames = dict(startup.frames)
        self._runtime = startup.runtime
        self.runtime_baseline_bytes = startup.runtime_baseline_bytes
        self._board = startup.board
        self.budget = startup.budget
        self.hardware_class = ""

    @classmethod
    def start(cls, config: AgentConfig, stop: threading.Event) -> Agent:
        """Warm up, measure, load the frames and open the channel; then the agent."""
        startup = start_up(config)
        _LOG.info(
            "runtime baseline %d bytes (private %d + %d of %d file bytes used), allocator %s; "
            "memory budget %d bytes (%s)",
            startup.runtime_baseline_bytes,
            startup.runtime.rss_anon_bytes + startup.runtime.rss_shmem_bytes,
            startup.runtime.file_allowance_bytes,
            startup.runtime.rss_file_bytes,
            startup.runtime.allocator,
            startup.budget.budget_bytes,
            startup.budget.source.value,
        )
        return cls(config, stop, startup, open_channel(config.coordinator, config.tls))

    def _hardware_class(self) -> str:
        """The operator's name for the board's kind, else its recognised class, else "" (the
        coordinator derives one from the hardware)."""
        if self._config.hardware_class:
            return self._config.hardware_class
        return self._board.name if self._board is not None else ""

    @property
    def node_id(self) -> str:
        return self._client.node_id

    def run(self) -> None:
        """Register (or resume as the stored node), then work until ``stop`` is set."""
        beating = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        try:
            self._resume_or_register()
            beating.start()
            while not self._stop.is_set():
                self._deliver_outbox()
                pulled = self._call(self._client.pull_task)
                kind = pulled.WhichOneof("task")
                if kind == "profile":
                    self._profile(pulled.task_id, pulled.profile)
                elif kind == "train":
                    self._train(pulled.task_id, pulled.train)
                else:
                    self._stop.wait(pulled.none.retry_after_s or 1.0)
        except AgentStopping:
            pass
        finally:
            # The heartbeat thread must be out of its call before the channel closes: a gRPC
            # call cut under a running thread aborts the process at exit.
            self._stop.set()
            if beating.is_alive():
                beating.join(timeout=30)
            self._channel.close()
        _LOG.info("agent stopped")

    # The coordinator.

    def _call(self, method: Callable[..., T], *args: object, **kwargs: object) -> T:
        backoff = Backoff(cap_s=self._config.backoff_cap_s)
        reregistered = False
        while True:
            if self._stop.is_set() and backoff.attempts:
                raise AgentStopping
            try:
                return method(*args, **kwargs)
            except grpc.RpcError as error:
                code = error.code()
                if code is grpc.StatusCode.UNAUTHENTICATED and self.node_id and not reregistered:
                    # The coordinator lost this node (a new registry): join again.
                    _LOG.warning("the coordinator does not know this node; registering again")
                    self._register()
                    reregistered = True
                    continue
                if code not in _TRANSIENT:
                    raise
                wait_s = backoff.next_wait_s()
                # UNAVAILABLE is also how a busy coordinator turns away an upload: say which.
                _LOG.warning(
                    "coordinator did not take the call (%s: %s); retrying in %.1f s",
                    code.name,
                    error.details() or "no detail",
                    wait_s,
                )
                if self._stop.wait(wait_s):
                    raise AgentStopping from None

    def _resume_or_register(self) -> None:
        stored = identity_store.load(self._config.data_dir)
        if stored is None:
            self._register()
            return
        self._client.node_id = stored.node_id
        self._client.credential = stored.credential
        self.hardware_class = stored.hardware_class
        _LOG.info("resuming as node %s (%s)", stored.node_id, stored.hardware_class)

    def _register(self) -> None:
        hardware = detect(self.budget.budget_bytes, self.runtime_baseline_bytes)
        self._client.node_id = ""
        try:
            response = self._call(
                self._client.register,
                self._config.enrollment_token,
                hardware.to_proto(),
                node_name=self._config.name or "board",
                agent_version=agent_version(),
                hardware_class=self._hardware_class(),
            )
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.UNAUTHENTICATED:
                raise EnrollmentRefused(str(error.details())) from None
            raise
        self.hardware_class = response.hardware_class
        identity_store.save(
            self._config.data_dir,
            identity_store.Identity(
                node_id=response.node_id,
                credential=response.node_credential,
                hardware_class=response.hardware_class,
                coordinator=self._config.coordinator,
            ),
        )
        _LOG.info(
            "registered as node %s (%s), runtime baseline %d bytes",
            response.node_id,
            response.hardware_class,
            self.runtime_baseline_bytes,
        )

    def _heartbeats(self) -> None:
        interval_s = 1.0
        while not self._stop.is_set():
            try:
                beat = self._client.heartbeat(self._current_task, rss_bytes())
                interval_s = beat.next_heartbeat_s or interval_s
                if self._current_job and self._current_job in beat.cancelled_job_ids:
                    self._cancelled.set()
            except grpc.RpcError as error:
                _LOG.debug("heartbeat failed: %s", error.code())
                interval_s = min(interval_s, 5.0)
            self._stop.wait(interval_s)

    def _report(
        self,
        task_id: str,
        kind: fleet_pb2.FailureKind.ValueType,
        message: str,
        *,
        job_id: str = "",
        round_number: int = 0,
        observed_peak_bytes: int = 0,
    ) -> None:
        _LOG.warning("task %s failed: %s", task_id, message)
        self._call(
            self._client.report_failure,
            task_id,
            kind,
            message,
            job_id=job_id,
            round_number=round_number,
            observed_peak_bytes=observed_peak_bytes,
        )

    # Profile tasks.

    def _profile(self, task_id: str, task: fleet_pb2.ProfileTask) -> None:
        _LOG.info(
            "profiling %s at batches %s, image sizes %s",
            task.model_name,
            list(task.batch_sizes),
            list(task.image_sizes),
        )
        try:
            result = run_profile(task)
        except Exception as error:
            kind = (
                fleet_pb2.FAILURE_KIND_OUT_OF_MEMORY
                if is_out_of_memory(error)
                else fleet_pb2.FAILURE_KIND_INVALID_TASK
                if isinstance(error, ValueError)
                else fleet_pb2.FAILURE_KIND_INTERNAL
            )
            self._report(task_id, kind, f"{type(error).__name__}: {error}", job_id=task.job_id)
            return
        response = self._call(
            self._client.upload_profile,
            task_id,
            task.model_name,
            result.profiles,
            parameter_bytes=result.parameter_bytes,
            buffer_bytes=result.buffer_bytes,
            num_classes=result.num_classes,
            allocator_overhead_fraction=result.allocator_overhead_fraction,
            allocator_overhead_bytes=result.allocator_overhead_bytes,
            model_library_bytes=result.model_library_bytes,
        )
        if not response.accepted:
            _LOG.error("profile refused: %s", response.rejection.message)

    # Train tasks.

    def _teacher(self, name: str, num_classes: int) -> nn.Module:
        key = (name, num_classes)
        if key not in self._teachers:
            teacher = build_model(name, num_classes)
            state = read_state_dict(weights_file(self._config.weights, name))
            load_into(teacher, state, f"the weights of {name}")
            self._teachers[key] = teacher.eval().requires_grad_(False)
        return self._teachers[key]

    def _board_frames(self, image_size: int) -> torch.Tensor:
        if image_size not in self._frames:
            loaded = load_frames(self._config.frames, image_size)
            if loaded.skipped:
                _LOG.warning("%d frames skipped (unreadable)", len(loaded.skipped))
            self._frames = {image_size: loaded.images}
        return self._frames[image_size]

    def _stop_reason(self, deadline_unix_s: float) -> str | None:
        if self._cancelled.is_set():
            return "cancelled"
        if self._stop.is_set():
            return "stopping"
        if deadline_unix_s and time.time() > deadline_unix_s:
            return "deadline"
        return None

    def _train(self, task_id: str, task: fleet_pb2.TrainTask) -> None:
        self._current_task, self._current_job = task_id, task.job_id
        self._cancelled.clear()
        fail = self._failure_reporter(task_id, task)
        try:
            try:
                weights = self._call(self._client.download_weights, task.job_id, task.round)
            except TransferError as error:
                fail(fleet_pb2.FAILURE_KIND_DOWNLOAD_FAILED, str(error))
                return
            if hashlib.sha256(weights).hexdigest() != task.weights_sha256_hex:
                fail(fleet_pb2.FAILURE_KIND_DOWNLOAD_FAILED, "weights differ from the task's")
                return
            if not task.teacher_model_name:
                fail(
                    fleet_pb2.FAILURE_KIND_INVALID_TASK,
                    "the board's frames have no labels: a job needs a teacher to train here",
                )
                return
            try:
                teacher = self._teacher(task.teacher_model_name, task.num_classes or 1000)
                frames = self._board_frames(task.image_size)
            except WeightsError as error:
                fail(fleet_pb2.FAILURE_KIND_INVALID_TASK, str(error))
                return
            except FramesError as error:
                fail(fleet_pb2.FAILURE_KIND_NO_DATA, str(error))
                return
            limit = self._guard_bytes(task.plan.budget_bytes)
            _LOG.info(
                "round %d of job %s: batch %d x %d, %d steps, %s, predicted peak %d bytes",
                task.round,
                task.job_id,
                task.batch_size,
                task.accumulation_steps,
                task.local_steps,
                task.plan.strategy,
                task.plan.predicted_peak_bytes,
            )
            try:
                result = train_round(
                    task,
                    weights,
                    frames,
                    teacher,
                    limit_bytes=limit,
                    reset_peak=reset_peak_rss,
                    measure_peak=peak_rss_bytes,
                    stop_reason=lambda: self._stop_reason(task.deadline_unix_s),
                    seed=task.round,
                    arena=self._arena,
                )
            except MemoryGuardTripped as error:
                fail(fleet_pb2.FAILURE_KIND_OUT_OF_MEMORY, str(error), error.observed_peak_bytes)
                return
            except (InvalidTask, WeightsError) as error:
                fail(fleet_pb2.FAILURE_KIND_INVALID_TASK, str(error))
                return
            except TaskStopped as stopped:
                if stopped.reason == "deadline":
                    fail(fleet_pb2.FAILURE_KIND_DEADLINE_EXCEEDED, "the round's deadline passed")
                elif stopped.reason == "stopping":
                    fail(fleet_pb2.FAILURE_KIND_INTERNAL, "the agent is stopping")
                else:
                    _LOG.info("job %s was cancelled; task %s dropped", task.job_id, task_id)
                return
            if self._arena is not None:
                arena = self._arena.stats()
                _LOG.info(
                    "arena: plan %d bytes (blocks' own peak %d), %d steps replayed, %d recorded, "
                    "%d blocks placed, %d off the record, %d around live blocks",
                    arena.planned_bytes,
                    arena.planned_live_bytes,
                    arena.steps_replayed,
                    arena.steps_recorded,
                    arena.hits,
                    arena.mismatches,
                    arena.overlaps,
                )
            pending = PendingUpdate(
                task_id=task_id,
                job_id=task.job_id,
                round=task.round,
                num_samples=result.num_samples,
                measured_peak_bytes=result.measured_peak_bytes,
                train_loss=result.train_loss,
                train_duration_s=result.duration_s,
            )
            self._outbox.put(pending, result.update)
            self._deliver(pending, result.update)
        finally:
            self._current_task, self._current_job = "", ""

    def _guard_bytes(self, planned_budget_bytes: int) -> int:
        """Where the memory guard stops a task: the margin is taken from the training share
        above the runtime baseline, as the planner's is, and is the smaller of the two, so that
        a plan kept within the planner's margin never trips the guard."""
        budget = self.budget.budget_bytes or planned_budget_bytes
        if not budget:
            return 1 << 62
        share = max(budget - self.runtime_baseline_bytes, 0)
        return self.runtime_baseline_bytes + int(share * (1 - self._config.memory_margin))

    def _failure_reporter(self, task_id: str, task: fleet_pb2.TrainTask) -> Callable[..., None]:
        def fail(kind: fleet_pb2.FailureKind.ValueType, message: str, peak: int = 0) -> None:
            self._report(
                task_id,
                kind,
                message,
                job_id=task.job_id,
                round_number=task.round,
                observed_peak_bytes=peak,
            )

        return fail

    def _deliver(self, pending: PendingUpdate, data: bytes) -> None:
        for attempt in range(1, _UPLOAD_ATTEMPTS + 1):
            response = self._call(
                self._client.upload_update,
                pending.task_id,
                pending.job_id,
                pending.round,
                data,
                num_samples=pending.num_samples,
                measured_peak_bytes=pending.measured_peak_bytes,
                train_loss=pending.train_loss,
                train_duration_s=pending.train_duration_s,
            )
            code = response.rejection.code
            if response.accepted or code != common_pb2.ERROR_CODE_CHECKSUM_MISMATCH:
                break
            _LOG.warning("update %s arrived corrupted (attempt %d)", pending.task_id, attempt)
        self._outbox.remove(pending.task_id)
        if response.accepted:
            _LOG.info(
                "round %d update accepted (%d samples, peak %d bytes)",
                pending.round,
                pending.num_samples,
                pending.measured_peak_bytes,
            )
        else:
            _LOG.warning("round %d update rejected: %s", pending.round, response.rejection.message)

    def _deliver_outbox(self) -> None:
        for pending, data in self._outbox.pending():
            self._deliver(pending, data)
