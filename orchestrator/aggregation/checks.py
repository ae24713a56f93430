"""What can be wrong with a board's update, checked against the global model: sample count,
format, tensor names, shapes and dtypes, finite values."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.aggregation.tensor_file import Layout, TensorFile, model_layout


@dataclass(frozen=True)
class Update:
    path: Path
    sample_count: int


class Problem(enum.Enum):
    """What is wrong with an update, for callers that react by kind (metrics, the protocol)."""

    SAMPLES = "samples"
    FORMAT = "format"
    SHAPE = "shape"
    NON_FINITE = "non_finite"


@dataclass(frozen=True)
class Rejection:
    update: Update
    reason: str
    problem: Problem


Verdict = tuple[Problem, str] | None
"""What is wrong with an update and why; None when nothing is."""


def layout_problem(expected: Layout, got: Layout) -> Verdict:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        return (
            Problem.SHAPE,
            f"tensor names differ from the model (missing {missing[:3]}, unexpected {extra[:3]})",
        )
    for name, (shape, dtype) in expected.items():
        if got[name] != (shape, dtype):
            got_shape, got_dtype = got[name]
            return (
                Problem.SHAPE,
                f"tensor {name!r} is {got_dtype}{list(got_shape)}, expected {dtype}{list(shape)}",
            )
    return None


def unreadable(exc: Exception) -> Verdict:
    return Problem.FORMAT, f"not a readable safetensors file: {exc}"


def floating_names(layout: Layout) -> list[str]:
    return [name for name, (_, dtype) in layout.items() if dtype.startswith("F")]


def check_update(global_path: Path, update: Update) -> Verdict:
    """What is wrong with ``update`` for the model at ``global_path``, and why; None if nothing."""
    if update.sample_count < 1:
        return Problem.SAMPLES, f"sample count must be at least 1, got {update.sample_count}"
    try:
        expected = model_layout(global_path)
        with TensorFile(update.path) as reader:
            problem = layout_problem(expected, reader.layout)
            if problem is not None:
                return problem
            for name in floating_names(expected):
                if not np.isfinite(reader.read(name)).all():
                    return Problem.NON_FINITE, f"tensor {name!r} has non-finite values"
    except (OSError, ValueError) as exc:
        return unreadable(exc)
    return None


def validate_update(global_path: Path, update: Update) -> str | None:
    """Why ``update`` cannot be aggregated into the model at ``global_path``; None if it can."""
    problem = check_update(global_path, update)
    return None if problem is None else problem[1]
