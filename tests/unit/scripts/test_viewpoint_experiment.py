"""The viewpoint experiment's own rounds: a board's distillation step and federated averaging,
simulated in one process (``scripts/viewpoint_experiment.py``)."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from checkpointing.execution.models import FLEET_STUDENT, FLEET_TEACHER
from checkpointing.execution.training import optimizer_for
from edgefleet.demo.models import build

_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "viewpoint_experiment.py"


def _experiment() -> ModuleType:
    spec = importlib.util.spec_from_file_location("viewpoint_experiment", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _frames(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)


def test_averaging_weighs_states_and_keeps_counters() -> None:
    first = {"w": torch.tensor([0.0, 4.0]), "n": torch.tensor(7)}
    second = {"w": torch.tensor([4.0, 0.0]), "n": torch.tensor(9)}

    averaged = _experiment().average_states([first, second], [3.0, 1.0])

    torch.testing.assert_close(averaged["w"], torch.tensor([1.0, 3.0]))
    assert int(averaged["n"]) == 7


def test_a_distillation_step_is_sgd_on_the_tempered_kl_divergence() -> None:
    student, teacher = build(FLEET_STUDENT).train(), build(FLEET_TEACHER).eval()
    reference = copy.deepcopy(student)
    frames, temperature, lr = _frames(8), 3.0, 0.05
    inputs = frames.float() / 255.0
    with torch.no_grad():
        targets = torch.softmax(teacher(inputs) / temperature, dim=1)
    log_probs = torch.log_softmax(reference(inputs) / temperature, dim=1)
    expected = (targets * (targets.log() - log_probs)).sum(dim=1).mean() * temperature**2
    expected.backward()

    optimizer = optimizer_for("sgd", list(student.parameters()), lr)
    loss = _experiment().distill_step(student, teacher, optimizer, frames, temperature)

    assert loss == pytest.approx(expected.item(), rel=1e-5)
    for moved, start in zip(student.parameters(), reference.parameters(), strict=True):
        assert start.grad is not None
        # The first step of SGD with momentum is a plain gradient step.
        torch.testing.assert_close(moved, start - lr * start.grad, rtol=1e-4, atol=1e-6)
