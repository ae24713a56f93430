"""Scenes and frames: determinism by seed, and one scene seen from different viewpoints."""

from __future__ import annotations

import numpy as np
import pytest

from viewpoint.dataset import Split
from viewpoint.raster import render
from viewpoint.scene import sample_scene, scene_rng
from viewpoint.viewpoints import BROAD, EYE_LEVEL, POLES, Viewpoint, by_name


def _frame(viewpoint_name: str, index: int, split: Split = Split.TRAIN) -> np.ndarray:
    scene = sample_scene(by_name(viewpoint_name), scene_rng(7, int(split), index), 48)
    return render(scene)


def test_a_frame_is_a_function_of_its_seed() -> None:
    first = _frame("broad", 3)
    again = _frame("broad", 3)
    other = _frame("broad", 4)

    assert first.shape == (48, 48, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 10


def test_train_and_eval_frames_of_one_seed_and_index_differ() -> None:
    train = _frame("pole_6m_45deg", 0, Split.TRAIN)
    held_out = _frame("pole_6m_45deg", 0, Split.EVAL)

    assert np.abs(train.astype(int) - held_out.astype(int)).mean() > 10


@pytest.mark.parametrize("pole", [p.name for p in POLES])
def test_the_same_scene_looks_different_from_a_pole(pole: str) -> None:
    # One seed draws the same object, ground and light for both viewpoints; only the camera moves.
    eye_scene = sample_scene(EYE_LEVEL, scene_rng(1, 0, 5), 48)
    pole_scene = sample_scene(by_name(pole), scene_rng(1, 0, 5), 48)

    eye, high = render(eye_scene), render(pole_scene)

    assert eye_scene.label == pole_scene.label
    assert (eye_scene.ground, eye_scene.lighting) == (pole_scene.ground, pole_scene.lighting)
    for eye_group, pole_group in zip(eye_scene.meshes[0], pole_scene.meshes[0], strict=True):
        np.testing.assert_array_equal(eye_group.corners_m, pole_group.corners_m)
    assert pole_scene.camera.height_m > 3.0 > eye_scene.camera.height_m
    assert np.abs(eye.astype(int) - high.astype(int)).mean() > 15


def test_eye_level_frames_show_sky_and_steep_pole_frames_none() -> None:
    for index in range(5):
        eye = sample_scene(EYE_LEVEL, scene_rng(2, 0, index), 48).camera
        steep = sample_scene(POLES[-1], scene_rng(2, 0, index), 48).camera

        assert eye.horizon_row() > 0.0  # the horizon is in the frame, sky above it
        assert steep.horizon_row() < 0.0  # the horizon is above the top row


@pytest.mark.parametrize("viewpoint", [POLES[0], POLES[3], BROAD.parts[1][1]])
def test_aimed_viewpoints_put_the_object_in_the_middle_of_the_frame(viewpoint: Viewpoint) -> None:
    for index in range(10):
        scene = sample_scene(viewpoint, scene_rng(3, 0, index), 64)
        corners = np.concatenate([g.corners_m.reshape(-1, 3) for g in scene.meshes[0]])
        center = (corners.min(axis=0) + corners.max(axis=0)) / 2.0

        pixels, _ = scene.camera.project(center)

        assert np.abs(pixels - 32.0).max() < 16.0
        assert viewpoint.tilt_deg[0] <= scene.camera.tilt_deg <= viewpoint.tilt_deg[1]


def test_unknown_viewpoints_and_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown viewpoint"):
        by_name("rooftop")
    with pytest.raises(ValueError, match="height_m"):
        Viewpoint("upside_down", (2.0, 1.0), (0.0, 1.0), (1.0, 2.0), aimed=False)
    with pytest.raises(ValueError, match="seed"):
        scene_rng(-1, 0, 0)
