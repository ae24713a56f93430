"""Frame sets on disk: PNGs, the labels file, and reading them back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from viewpoint.dataset import (
    LABELS_FILE,
    MANIFEST_FILE,
    FrameSetError,
    Split,
    read_labelled,
    render_frames,
    write_frames,
)
from viewpoint.objects import CLASSES
from viewpoint.viewpoints import POLES


def test_a_labelled_set_reads_back_exactly_as_rendered(tmp_path: Path) -> None:
    images, labels = render_frames(POLES[1], 6, 11, Split.EVAL, image_size=32)

    write_frames(tmp_path, POLES[1], 6, 11, labelled=True, image_size=32)
    read = read_labelled(tmp_path)

    np.testing.assert_array_equal(read.images, images)
    np.testing.assert_array_equal(read.labels, labels)
    assert read.files == tuple(f"{i:06d}.png" for i in range(6))
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["split"] == "eval" and manifest["viewpoint"] == POLES[1].name


def test_an_unlabelled_set_is_training_frames_without_labels(tmp_path: Path) -> None:
    images, _ = render_frames(POLES[0], 3, 11, Split.TRAIN, image_size=32)

    write_frames(tmp_path, POLES[0], 3, 11, labelled=False, image_size=32)

    assert not (tmp_path / LABELS_FILE).exists()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [f"{i:06d}.png" for i in range(3)]
    with pytest.raises(FrameSetError, match="not a labelled frame set"):
        read_labelled(tmp_path)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["split"] == "train"
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "000002.png")), images[2])


def test_a_labels_file_naming_the_wrong_class_is_refused(tmp_path: Path) -> None:
    write_frames(tmp_path, POLES[2], 2, 1, labelled=True, image_size=32)
    text = (tmp_path / LABELS_FILE).read_text().splitlines()
    name, label, _ = text[1].split(",")
    wrong = CLASSES[(int(label) + 1) % len(CLASSES)]
    (tmp_path / LABELS_FILE).write_text("\n".join([text[0], f"{name},{label},{wrong}", text[2]]))

    with pytest.raises(FrameSetError, match="has label"):
        read_labelled(tmp_path)


def test_workers_render_the_same_frames_as_one_process() -> None:
    alone = render_frames(POLES[3], 8, 5, Split.TRAIN, image_size=32)
    shared = render_frames(POLES[3], 8, 5, Split.TRAIN, image_size=32, workers=2)

    np.testing.assert_array_equal(alone[0], shared[0])
    np.testing.assert_array_equal(alone[1], shared[1])


def test_labels_cover_every_class() -> None:
    _, labels = render_frames(POLES[0], 60, 2, Split.TRAIN, image_size=32)

    assert set(labels.tolist()) == set(range(len(CLASSES)))
