"""The hard-cap proof of a plan: run it where exceeding the budget is fatal, beside store-all.

The plan for the largest batch is trained in a child process capped at the budget, then
store-all at the same batch under the same cap, then store-all at the largest batch the planner
says store-all could use. A cgroup charges what the child allocates itself, while shared-library
pages another process already cached count in its RSS but not against the cap, so surviving is
not enough: the plan's peak RSS is also compared with the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from checkpointing.planning.budget import ProcessFacts
from checkpointing.planning.memory_model import MemoryModel
from checkpointing.planning.planner import Plan, PlanRequest
from edgefleet.harness.hardcap import CappedRun, TrainJob, run_capped
from edgefleet.measurements import checked_plan
from edgefleet.progress import Report

_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class BudgetProof:
    plan: Plan
    plan_run: CappedRun
    store_all_same_batch: CappedRun
    store_all_max_batch: CappedRun | None

    def to_dict(self) -> dict[str, Any]:
        predicted = self.plan.predicted_peak_bytes
        measured = self.plan_run.peak_rss_bytes
        return {
            "cap_bytes": self.plan_run.cap_bytes,
            "cap_mechanism": self.plan_run.cap_mechanism,
            "plan": {
                **_run_dict(self.plan_run),
                "batch_size": self.plan.batch_size,
                "strategy": self.plan.strategy,
                "predicted_peak_bytes": predicted,
                "terms": self.plan.terms.as_dict(),
                "within_budget": self.plan_run.survived
                and measured is not None
                and measured <= self.plan_run.cap_bytes,
                "prediction_error": None if measured is None else predicted / measured - 1,
            },
            "store_all_same_batch": {
                **_run_dict(self.store_all_same_batch),
                "batch_size": self.plan.batch_size,
            },
            "store_all_max_batch": self.plan.store_all_max_batch,
            "store_all_at_its_max_batch": None
            if self.store_all_max_batch is None
            else _run_dict(self.store_all_max_batch),
        }


def _run_dict(run: CappedRun) -> dict[str, Any]:
    return {
        "survived": run.survived,
        "failure": run.failure,
        "peak_rss_bytes": run.peak_rss_bytes,
        "cgroup_peak_bytes": run.cgroup_peak_bytes,
        "wall_s": run.wall_s,
    }


def prove_budget(
    student: MemoryModel,
    facts: ProcessFacts,
    request: PlanRequest,
    steps: int,
    report: Report,
) -> BudgetProof:
    plan = checked_plan(student, request, facts, report)

    def job(batch_size: int, schedule: tuple[str, ...] | None) -> TrainJob:
        return TrainJob(
            model=student.model,
            image_size=request.image_size,
            batch_size=batch_size,
            num_classes=student.num_classes,
            schedule=schedule,
            optimizer=request.optimizer.value,
            steps=steps,
        )

    cap = request.budget_bytes
    report("plan under the cap", 0, 3)
    planned = run_capped(job(plan.batch_size, tuple(plan.schedule.to_strings())), cap, _TIMEOUT_S)
    report("store-all, same batch", 1, 3)
    same = run_capped(job(plan.batch_size, None), cap, _TIMEOUT_S)
    report("store-all, its largest batch", 2, 3)
    largest = None
    if plan.store_all_max_batch > 0:
        largest = run_capped(job(plan.store_all_max_batch, None), cap, _TIMEOUT_S)
    report("store-all, its largest batch", 3, 3)
    return BudgetProof(plan, planned, same, largest)
