"""The fleet demo's student and teacher in the model registry."""

from __future__ import annotations

import pytest
import torch

from checkpointing.execution.accountant import LiveTensorAccountant
from checkpointing.execution.models import (
    FLEET_STUDENT,
    FLEET_TEACHER,
    build_model,
    classification_models,
)
from checkpointing.execution.split import run_stages, split_model

_IMAGE_SIZE = 64
_CLASSES = 6


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", [FLEET_STUDENT, FLEET_TEACHER])
def test_builds_by_name_splits_into_stages_and_computes_what_the_model_does(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, _CLASSES).eval()
    images = torch.rand(2, 3, _IMAGE_SIZE, _IMAGE_SIZE)

    stages = split_model(model, images)

    assert name in classification_models()
    assert isinstance(model, torch.nn.Sequential)
    assert len(stages) >= 8
    with torch.no_grad():
        expected = model(images)
        assert expected.shape == (2, _CLASSES)
        torch.testing.assert_close(run_stages(stages, images), expected, rtol=0, atol=0)


def test_the_teacher_is_several_times_the_student() -> None:
    student, teacher = build_model(FLEET_STUDENT, _CLASSES), build_model(FLEET_TEACHER, _CLASSES)

    assert _parameters(teacher) >= 3 * _parameters(student)


def test_the_student_keeps_a_megabyte_of_activations_per_sample() -> None:
    # What training must hold for the backward pass: the reason the demo needs checkpointing.
    student = build_model(FLEET_STUDENT, _CLASSES).train()
    images = torch.rand(4, 3, _IMAGE_SIZE, _IMAGE_SIZE)

    with LiveTensorAccountant() as meter:
        before = meter.live_bytes
        logits = student(images)
        held = meter.live_bytes - before

    assert logits.shape == (4, _CLASSES)
    assert held / len(images) >= 1_000_000
