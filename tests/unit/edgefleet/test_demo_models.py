"""The demo's model helpers: settings, weights files, averaging and a distillation step."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from checkpointing.models import FLEET_STUDENT, FLEET_TEACHER
from checkpointing.training import optimizer_for
from edgefleet.demo_models import (
    DEMO,
    DemoSettings,
    FrameSet,
    average_states,
    build,
    distill_step,
    evaluate,
    images_to_tensor,
    load_weights,
    predict,
    save_weights,
)
from viewpoint.dataset import Split, read_labelled
from viewpoint.objects import CLASSES


def _frames(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)


def test_weights_round_trip_through_safetensors(tmp_path: Path) -> None:
    model = build(FLEET_STUDENT).eval()
    frames = _frames(4)

    path = save_weights(model, tmp_path / "student.safetensors")
    loaded = load_weights(FLEET_STUDENT, path)

    assert loaded.state_dict().keys() == model.state_dict().keys()
    torch.testing.assert_close(predict(loaded, frames), predict(model, frames), rtol=0, atol=0)


def test_averaging_weighs_states_and_keeps_counters() -> None:
    first = {"w": torch.tensor([0.0, 4.0]), "n": torch.tensor(7)}
    second = {"w": torch.tensor([4.0, 0.0]), "n": torch.tensor(9)}

    averaged = average_states([first, second], [3.0, 1.0])

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
    loss = distill_step(student, teacher, optimizer, frames, temperature)

    assert loss == pytest.approx(expected.item(), rel=1e-5)
    for moved, start in zip(student.parameters(), reference.parameters(), strict=True):
        assert start.grad is not None
        # The first step of SGD with momentum is a plain gradient step.
        torch.testing.assert_close(moved, start - lr * start.grad, rtol=1e-4, atol=1e-6)


def test_accuracy_counts_the_argmax_against_the_labels() -> None:
    model = build(FLEET_STUDENT).eval()
    frames = _frames(8)
    predicted = predict(model, frames).argmax(dim=1)

    assert evaluate(model, frames, predicted) == 1.0
    assert evaluate(model, frames, (predicted + 1) % len(CLASSES)) == 0.0


def test_frame_sets_of_a_board_are_one_viewpoint_in_two_splits() -> None:
    train, held_out = DEMO.board_train_set(3), DEMO.board_eval_set(3)

    assert train.viewpoint == held_out.viewpoint == DEMO.boards[3]
    assert (train.split, held_out.split) == (Split.TRAIN, Split.EVAL)
    assert DEMO.teacher_set().split == Split.TRAIN
    seeds = {DEMO.teacher_set().seed, DEMO.student_set().seed}
    seeds |= {DEMO.board_train_set(b).seed for b in range(4)}
    assert len(seeds) == 6


def test_images_become_channels_first_frames() -> None:
    images = torch.arange(2 * 4 * 4 * 3, dtype=torch.uint8).reshape(2, 4, 4, 3).numpy()

    frames = images_to_tensor(images)

    assert frames.shape == (2, 3, 4, 4)
    assert int(frames[1, 2, 3, 0]) == int(images[1, 3, 0, 2])


@pytest.mark.parametrize(
    "changes",
    [{"local_steps": 0}, {"temperature": 0.0}, {"boards": ("rooftop",)}, {"optimizer": "lbfgs"}],
)
def test_invalid_settings_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DemoSettings(**changes)  # type: ignore[arg-type]


def test_the_pretraining_key_follows_only_what_pretraining_depends_on() -> None:
    assert DemoSettings(local_steps=7).pretraining_key() == DEMO.pretraining_key()
    assert DemoSettings(teacher_epochs=1).pretraining_key() != DEMO.pretraining_key()


def test_a_written_board_set_reads_back_as_its_rendering(tmp_path: Path) -> None:
    frame_set = FrameSet(DEMO.boards[0], 3, 5, Split.EVAL)
    frames, labels = frame_set.render(32)

    frame_set.write(tmp_path, 32, labelled=True)
    read = read_labelled(tmp_path)

    assert torch.equal(images_to_tensor(read.images), frames)
    assert torch.equal(torch.from_numpy(read.labels), labels)
