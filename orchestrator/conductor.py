"""The conductor: moves every unfinished job forward, one step per look.

Each look (every ``tick_s``, and at once when a handler sets ``state.wake``) takes each pending
or running job through what it needs next, from what the registry holds, so a restarted
coordinator carries on where the last one stopped:

1. every hardware class among the live boards needs a memory model of the job's student (and
   teacher) at the job's image size: if none is fitted, one board of the class gets a profile
   task (another one if that board is lost or times out, up to ``PROFILE_ATTEMPTS``);
2. every live board whose class has its models gets a plan (batch, schedule) within its own
   budget, made again when its models change or it reported running out of memory; a board
   whose plan cannot fit is recorded with the shortfall and never selected;
3. a pending job starts running once ``min_nodes`` boards are planned;
4. a running job without an open round starts the next one: it selects
   ``max(min_nodes, ceil(fraction × planned))`` planned live boards at random;
5. an open round closes on its quorum (``min_nodes`` accepted updates), once every selected board
   has answered, or at its deadline; it is aggregated into the next model version (a round with
   no accepted update fails and leaves the model as it was);
6. after the last round the job succeeds with its latest model as the final one.

Steps 1 and 2 run between rounds only: while a round is open a look only checks whether it can
close (boards that join meanwhile are profiled and planned for the next round).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from orchestrator import rounds
from orchestrator.aggregation import AggregationRule, Update, aggregate
from orchestrator.events import EventKind
from orchestrator.job_spec import JobSpec
from orchestrator.outcomes import RoundOutcome
from orchestrator.planning import (
    PROFILE_BATCH_SIZES,
    MemoryModelPayload,
    NodePlanResult,
    StoredPlan,
    plan_node,
    profile_image_sizes,
)
from orchestrator.state import FleetState
from orchestrator.storage import StorageConflict
from orchestrator.storage.records import (
    JobRecord,
    JobStatus,
    MemoryModelRecord,
    NewAssignment,
    NewModelVersion,
    NewNodePlan,
    NewProfileTask,
    NewRound,
    NodePlanRecord,
    NodeRecord,
    NodeStatus,
    ProfileTaskStatus,
    RoundRecord,
    RoundStatus,
    UpdateStatus,
)

_LOG = logging.getLogger(__name__)
PROFILE_ATTEMPTS = 3
_READ_BYTES = 1 << 20


class Conductor:
    def __init__(self, state: FleetState, rng: random.Random | None = None) -> None:
        # Every outcome's series exists from the start at zero (see FleetMetrics).
        for outcome in RoundOutcome:
            state.metrics.rounds.labels(outcome.value)
        self._state = state
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # (job, node) -> what its stored plan was made from; a change re-plans it.
        self._planned: dict[tuple[str, str], tuple[object, ...]] = {}
        self._plan_cache: dict[tuple[object, ...], NodePlanResult] = {}
        # Rounds seen open in the current look: the running sums of any other are dropped.
        self._open_rounds: set[int] = set()

    @contextmanager
    def running(self) -> Iterator[Conductor]:
        self._thread = threading.Thread(target=self._loop, name="conductor", daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._state.wake.set()
            self._thread.join()
            self._state.seen.flush(self._state.storage)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._state.wake.clear()
            self.tick()
            self._state.wake.wait(self._state.config.tick_s)

    def tick(self) -> None:
        """One look at every unfinished job; a job's error is logged and leaves the others be."""
        storage = self._state.storage
        try:
            self._state.seen.flush(storage, only_if_due=True)
        except Exception:
            _LOG.exception("could not record when boards were last seen")
        jobs = [*storage.list_jobs(status=JobStatus.PENDING)]
        jobs += storage.list_jobs(status=JobStatus.RUNNING)
        self._open_rounds = set()
        for job in jobs:
            try:
                self._advance(job)
            except Exception:
                _LOG.exception("job %s: could not advance it", job.id)
        with self._state.round_lock:
            self._state.sums.keep_only(self._open_rounds)

    def _advance(self, job: JobRecord) -> None:
        state = self._state
        spec = JobSpec.from_stored(job.spec_json)
        current = None
        if job.status is JobStatus.RUNNING:
            rounds = state.storage.list_rounds(job.id)
            current = rounds[-1] if rounds else None
            # A round in progress needs no profiles or plans (they are for the next round), and
            # this look runs every tick while boards upload: keep it to the round.
            if current is not None and current.status is RoundStatus.OPEN:
                self._open_rounds.add(current.id)
                self._maybe_close(job, spec, current)
                return
            if current is not None and current.status is RoundStatus.AGGREGATING:
                self._aggregate(job, spec, current)
                return
        now = state.clock()
        cutoff = now - timedelta(seconds=state.config.heartbeat_timeout_s)
        live = [n for n in state.storage.nodes_seen_since(cutoff) if n.status is NodeStatus.ACTIVE]
        fitted = {
            (m.hardware_class, m.model, m.image_size): m for m in state.storage.list_memory_models()
        }
        self._ask_for_profiles(job, spec, live, fitted)
        planned = self._plan(job, spec, live, fitted)
        if job.status is JobStatus.PENDING:
            if len(planned) >= spec.min_nodes:
                self._set_state(job, JobStatus.RUNNING, "")
            else:
                self._say(job, _waiting(len(planned), spec.min_nodes))
            return
        number = 0 if current is None else current.number + 1
        if number >= spec.rounds:
            self._finish(job)
            return
        if len(planned) < spec.min_nodes:
            self._say(job, _waiting(len(planned), spec.min_nodes))
            return
        self._start_round(job, spec, number, planned)

    # Profiles and plans.

    def _models(self, spec: JobSpec) -> list[str]:
        return [spec.student] + ([spec.teacher] if spec.teacher else [])

    def _ask_for_profiles(
        self,
        job: JobRecord,
        spec: JobSpec,
        live: Sequence[NodeRecord],
        fitted: dict[tuple[str, str, int], MemoryModelRecord],
    ) -> None:
        storage = self._state.storage
        now = self._state.clock()
        live_ids = {node.id for node in live}
        by_class: dict[str, list[NodeRecord]] = {}
        for node in live:
            by_class.setdefault(node.hardware_class, []).append(node)
        for hardware_class, nodes in sorted(by_class.items()):
            for model in self._models(spec):
                if (hardware_class, model, spec.image_size) in fitted:
                    continue
                tasks = storage.list_profile_tasks(
                    hardware_class=hardware_class, model=model, image_size=spec.image_size
                )
                waiting = False
                for task in tasks:
                    if task.status.is_terminal:
                        continue
                    timed_out = task.status is ProfileTaskStatus.SENT and now - task.updated_at > (
                        timedelta(seconds=self._state.config.profile_timeout_s)
                    )
                    if task.node_id in live_ids and not timed_out:
                        waiting = True
                        continue
                    why = "timed out" if timed_out else "its node was lost"
                    try:
                        storage.update_profile_task(
                            task.id,
                            status=ProfileTaskStatus.FAILED,
                            expected_status=task.status,
                            message=f"profile task {why}",
                        )
                    except StorageConflict:
                        waiting = True
                failed = sum(1 for task in tasks if task.status is ProfileTaskStatus.FAILED)
                if waiting or failed >= PROFILE_ATTEMPTS:
                    continue
                tried = {task.node_id for task in tasks}
                choice = min(nodes, key=lambda node: (node.id in tried, node.id))
                storage.create_profile_task(
                    NewProfileTask(
                        node_id=choice.id,
                        job_id=job.id,
                        hardware_class=hardware_class,
                        model=model,
                        image_size=spec.image_size,
                        batch_sizes=PROFILE_BATCH_SIZES,
                        image_sizes=profile_image_sizes(spec.image_size),
                    )
                )
                self._state.idle_pulls.wake(choice.id)

    def _plan(
        self,
        job: JobRecord,
        spec: JobSpec,
        live: Sequence[NodeRecord],
        fitted: dict[tuple[str, str, int], MemoryModelRecord],
    ) -> dict[str, NodePlanRecord]:
        """The fitting plans of the live boards that can be planned, by node id."""
        storage = self._state.storage
        stored = {plan.node_id: plan for plan in storage.list_node_plans(job_id=job.id)}
        class_ooms = _class_out_of_memory_counts(live, stored)
        fitting: dict[str, NodePlanRecord] = {}
        for node in live:
            records = [
                fitted.get((node.hardware_class, m, spec.image_size)) for m in self._models(spec)
            ]
            if any(record is None for record in records):
                continue
            models = [record for record in records if record is not None]
            previous = stored.get(node.id)
            # The boards of a class run the same process and models: what one of them ran out
            # of memory on (memory no profile saw), the others would too.
            oom_count = max(
                previous.oom_count if previous is not None else 0,
                class_ooms.get(node.hardware_class, 0),
            )
            key = (
                tuple(record.created_at for record in models),
                node.hardware,
                oom_count,
            )
            plan = previous
            if previous is None or self._planned.get((job.id, node.id)) != key:
                result = self._plan_cache.get((job.id, *key))
                if result is None:
                    payloads = [MemoryModelPayload.from_json(r.payload_json) for r in models]
                    result = plan_node(
                        spec,
                        node.hardware,
                        payloads[0],
                        payloads[1] if len(payloads) > 1 else None,
                        ram_fraction=self._state.config.ram_fraction,
                        oom_count=oom_count,
                        default_overhead_fraction=self._state.config.default_overhead_fraction,
                    )
                    self._plan_cache[(job.id, *key)] = result
                plan = storage.put_node_plan(
                    NewNodePlan(
                        job_id=job.id,
                        node_id=node.id,
                        fits=result.fits,
                        plan_json=result.plan_json(),
                        budget_bytes=result.budget_bytes,
                        shortfall_bytes=result.shortfall_bytes,
                        message=result.message,
                        oom_count=oom_count,
                    )
                )
                self._planned[(job.id, node.id)] = key
            assert plan is not None
            if plan.fits:
                fitting[node.id] = plan
        return fitting

    # Job state.

    def _say(self, job: JobRecord, message: str) -> None:
        if job.message != message:
            self._state.storage.update_job(job.id, message=message)

    def _set_state(self, job: JobRecord, status: JobStatus, message: str, **fields: object) -> bool:
        try:
            self._state.storage.update_job(
                job.id,
                status=status,
                expected_status=job.status,
                message=message,
                **fields,  # type: ignore[arg-type]
            )
        except StorageConflict:
            return False
        payload: dict[str, object] = {"state": status.value}
        if message:
            payload["message"] = message
        self._state.events.append(job.id, EventKind.STATE_CHANGED, payload)
        return True

    def _finish(self, job: JobRecord) -> None:
        latest = self._state.storage.latest_model_version(job.id)
        now = self._state.clock()
        if latest is None or latest.version == 0:
            self._set_state(job, JobStatus.FAILED, "no round produced a model", finished_at=now)
            return
        self._set_state(
            job, JobStatus.SUCCEEDED, "", finished_at=now, final_model_version=latest.version
        )

    # Rounds.

    def _start_round(
        self, job: JobRecord, spec: JobSpec, number: int, planned: dict[str, NodePlanRecord]
    ) -> None:
        state = self._state
        candidates = sorted(planned)
        wanted = max(spec.min_nodes, math.ceil(spec.fraction_per_round * len(candidates)))
        chosen = sorted(self._rng.sample(candidates, min(wanted, len(candidates))))
        started = state.clock()
        try:
            round_ = state.storage.create_round(
                NewRound(
                    job_id=job.id,
                    number=number,
                    deadline_at=started + timedelta(seconds=spec.round_deadline_s),
                    num_selected_nodes=len(chosen),
                )
            )
        except StorageConflict:
            return
        self._open_rounds.add(round_.id)
        for node_id in chosen:
            plan = planned[node_id]
            assert plan.plan_json is not None, "a fitting plan has its plan"
            stored = StoredPlan.from_json(plan.plan_json)
            state.storage.create_assignment(
                NewAssignment(
                    round_id=round_.id,
                    node_id=node_id,
                    batch_size=stored.batch_size,
                    accumulation_steps=stored.accumulation_steps,
                    schedule_json=plan.plan_json,
                    predicted_peak_bytes=stored.predicted_peak_bytes,
                )
            )
            state.idle_pulls.wake(node_id)
        self._say(job, "")
        state.events.append(
            job.id,
            EventKind.ROUND_STARTED,
            {
                "round": number,
                "node_ids": chosen,
                "deadline_unix_s": round_.deadline_at.timestamp(),
            },
        )

    def _maybe_close(self, job: JobRecord, spec: JobSpec, round_: RoundRecord) -> None:
        state = self._state
        updates = state.storage.list_updates(round_.id)
        accepted = sum(1 for update in updates if update.status is UpdateStatus.ACCEPTED)
        assignments = state.storage.list_assignments(round_.id)
        answered = {update.node_id for update in updates} | {
            a.node_id for a in assignments if a.status.value == "failed"
        }
        if accepted >= min(spec.min_nodes, max(round_.num_selected_nodes, 1)):
            outcome = RoundOutcome.QUORUM
        elif assignments and len(answered) >= len(assignments):
            outcome = RoundOutcome.ALL_REPORTED if accepted else RoundOutcome.FAILED
        elif state.clock() >= round_.deadline_at:
            outcome = RoundOutcome.DEADLINE if accepted else RoundOutcome.FAILED
        else:
            return
        failed = outcome is RoundOutcome.FAILED
        with state.round_lock:
            try:
                closed = state.storage.update_round(
                    round_.id,
                    status=RoundStatus.FAILED if failed else RoundStatus.AGGREGATING,
                    expected_status=RoundStatus.OPEN,
                    finished_at=state.clock() if failed else None,
                    outcome=outcome.value,
                    num_updates=0 if failed else None,
                )
            except StorageConflict:
                return
        if failed:
            self._completed(job, spec, closed, "", 0.0)
            return
        self._aggregate(job, spec, closed)

    def _aggregate(self, job: JobRecord, spec: JobSpec, round_: RoundRecord) -> None:
        state = self._state
        store = state.model_store
        updates = state.storage.list_updates(round_.id, status=UpdateStatus.ACCEPTED)
        made = state.storage.get_model_version(job.id, round_.number + 1)
        aggregation_s = 0.0
        if made is None:
            base = rounds.starting_model(state.storage, job.id, round_.number)
            base_path = store.path(base.digest)
            out = store.root / "tmp" / f"round-{round_.id}.safetensors"
            started = time.perf_counter()
            if spec.aggregation is AggregationRule.FEDAVG:
                with state.round_lock:
                    running = rounds.round_sum(
                        state.storage, store, state.sums, round_.id, base_path
                    )
                    if running.broken or running.keys != {u.node_id for u in updates}:
                        # Not what the registry accepted (a write that failed after its commit,
                        # an update that could not be taken back): rebuild it.
                        state.sums.pop(round_.id)
                        running = rounds.round_sum(
                            state.storage, store, state.sums, round_.id, base_path
                        )
                    state.sums.pop(round_.id)
                running.write(out)
            else:
                aggregate(
                    base_path,
                    [Update(store.path(u.blob_digest or ""), u.num_samples) for u in updates],
                    spec.aggregation,
                    out,
                    spec.trim_fraction,
                    checked=True,
                )
            digest = store.put(_read_chunks(out))
            out.unlink()
            aggregation_s = time.perf_counter() - started
            try:
                made = state.storage.create_model_version(
                    NewModelVersion(
                        job_id=job.id, version=round_.number + 1, round_id=round_.id, digest=digest
                    )
                )
            except StorageConflict:
                made = state.storage.get_model_version(job.id, round_.number + 1)
                assert made is not None, "the conflicting version exists"
            state.metrics.aggregation.observe(aggregation_s)
        try:
            completed = state.storage.update_round(
                round_.id,
                status=RoundStatus.COMPLETED,
                expected_status=RoundStatus.AGGREGATING,
                finished_at=state.clock(),
                aggregation_s=aggregation_s,
                num_updates=len(updates),
            )
        except StorageConflict:
            return
        self._completed(job, spec, completed, made.digest, aggregation_s)

    def _completed(
        self,
        job: JobRecord,
        spec: JobSpec,
        round_: RoundRecord,
        digest: str,
        aggregation_s: float,
    ) -> None:
        state = self._state
        finished = round_.finished_at or state.clock()
        duration_s = (finished - round_.started_at).total_seconds()
        outcome = round_.outcome or RoundOutcome.FAILED.value
        state.metrics.rounds.labels(outcome).inc()
        if digest:
            state.metrics.round_duration.observe(duration_s)
        state.events.append(
            job.id,
            EventKind.ROUND_COMPLETED,
            {
                "round": round_.number,
                "outcome": outcome,
                "num_updates": round_.num_updates or 0,
                "model_sha256_hex": digest,
                "duration_s": duration_s,
                "aggregation_s": aggregation_s,
            },
        )
        if round_.number + 1 >= spec.rounds:
            current = state.storage.get_job(job.id)
            if current is not None and current.status is JobStatus.RUNNING:
                self._finish(current)


def _waiting(planned: int, needed: int) -> str:
    return f"waiting for boards: {planned} of {needed} planned"


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(_READ_BYTES):
            yield chunk


def _class_out_of_memory_counts(
    live: Sequence[NodeRecord], stored: dict[str, NodePlanRecord]
) -> dict[str, int]:
    """Per hardware class, the most out-of-memory reports any of its live boards has had in
    this job."""
    counts: dict[str, int] = {}
    for node in live:
        plan = stored.get(node.id)
        if plan is not None:
            counts[node.hardware_class] = max(counts.get(node.hardware_class, 0), plan.oom_count)
    return counts
