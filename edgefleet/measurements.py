"""Measurements the planning commands reuse: fitted memory models and process calibrations.

Both take a while to measure (profiling a model at several sizes; training in a child process),
so they are kept as JSON under the cache directory (``$EDGEFLEET_CACHE``, else
``$XDG_CACHE_HOME/edgefleet``, else ``~/.cache/edgefleet``), keyed by what they depend on:
model, classes, image size, and the torch version that measured them. Delete the directory to
measure again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from checkpointing.planning.budget import ProcessFacts
from checkpointing.planning.memory_model import MemoryModel, MemoryModelError
from checkpointing.planning.planner import Plan, PlanRequest, plan_training
from edgefleet.progress import Report


def cache_root() -> Path:
    explicit = os.environ.get("EDGEFLEET_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgefleet"


def _torch_tag() -> str:
    import torch

    return "torch" + torch.__version__.replace("+", "_")


def _read_json(path: Path) -> object | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data))
    partial.replace(path)  # atomic: a reader never sees half a file


def memory_model(name: str, num_classes: int, report: Report) -> MemoryModel:
    """The fitted memory model of ``name``, measured now if it is not in the cache."""
    from checkpointing.execution.profile_sizes import fit_model

    path = cache_root() / "memory-models" / f"{name}-{num_classes}-{_torch_tag()}.json"
    cached = _read_json(path)
    if cached is not None:
        try:
            return MemoryModel.from_dict(cached)  # type: ignore[arg-type]
        except MemoryModelError:
            pass  # an older format: measure again
    report(f"profiling {name}", 0, 1)
    fitted = fit_model(name, num_classes=num_classes)
    report(f"profiling {name}", 1, 1)
    _write_json(path, fitted.to_dict())
    return fitted


def process_facts(name: str, image_size: int, num_classes: int, report: Report) -> ProcessFacts:
    """Runtime baseline and allocator overhead, measured now if they are not in the cache."""
    from edgefleet.harness.calibrate import calibrate_process

    key = f"{name}-{image_size}px-{num_classes}-{_torch_tag()}.json"
    path = cache_root() / "process" / key
    cached = _read_json(path)
    if isinstance(cached, dict):
        try:
            return ProcessFacts(**cached)
        except (TypeError, ValueError):
            pass
    report("measuring the process", 0, 1)
    facts = calibrate_process(name, image_size, num_classes)
    report("measuring the process", 1, 1)
    _write_json(path, asdict(facts))
    return facts


def checked_plan(
    student: MemoryModel,
    request: PlanRequest,
    facts: ProcessFacts,
    report: Report,
    teacher: MemoryModel | None = None,
) -> Plan:
    """Plan, run the plan once to measure its allocator overhead, and plan again with it.

    The overhead a store-all calibration measures understates a recomputing schedule's, so the
    fraction measured on the planned run (cached per model, image size and batch) replaces it
    where larger. ``PlanError`` as ``plan_training``.
    """
    from edgefleet.harness.calibrate import overhead_fraction_of
    from edgefleet.harness.hardcap import TrainJob

    plan = plan_training(student, request, facts, teacher)
    key = f"{student.model}-{request.image_size}px-b{plan.batch_size}-{plan.strategy}"
    path = cache_root() / "overhead" / f"{key}-{_torch_tag()}.json"
    cached = _read_json(path)
    if isinstance(cached, dict) and isinstance(cached.get("fraction"), float):
        fraction = cached["fraction"]
    else:
        report("measuring the plan's overhead", 0, 1)
        job = TrainJob(
            model=student.model,
            image_size=request.image_size,
            batch_size=plan.batch_size,
            num_classes=student.num_classes,
            schedule=tuple(plan.schedule.to_strings()),
            optimizer=request.optimizer.value,
            steps=2,
            teacher=teacher.model if teacher else None,
        )
        fraction = overhead_fraction_of(job)
        report("measuring the plan's overhead", 1, 1)
        _write_json(path, {"fraction": fraction})
    if fraction <= facts.allocator_overhead_fraction:
        return plan
    refined = ProcessFacts(
        runtime_baseline_bytes=facts.runtime_baseline_bytes,
        allocator_overhead_fraction=fraction,
        allocator_overhead_bytes=facts.allocator_overhead_bytes,
    )
    return plan_training(student, request, refined, teacher)
