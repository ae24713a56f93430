"""The demo's model helpers: settings, frame sets, weights files, evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from checkpointing.execution.models import FLEET_STUDENT
from edgefleet.demo.models import (
    DEMO,
    DemoSettings,
    FrameSet,
    build,
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
