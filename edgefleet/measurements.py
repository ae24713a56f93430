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

from checkpointing.budget import ProcessFacts
from checkpointing.memory_model import MemoryModel, MemoryModelError
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
    from checkpointing.sampling import fit_model

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
    from checkpointing.calibrate import calibrate_process

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
