"""The pinhole camera against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from viewpoint.camera import Camera, look_from


def _camera(tilt_deg: float = 30.0, yaw_deg: float = 40.0, size: int = 64) -> Camera:
    return Camera((1.0, -2.0, 6.0), yaw_deg, tilt_deg, 50.0, size)


def test_a_point_on_the_optical_axis_projects_to_the_image_centre() -> None:
    camera = _camera()
    forward = camera.basis()[2]

    pixels, depth = camera.project(np.array(camera.position_m) + 7.5 * forward)

    np.testing.assert_allclose(pixels, [32.0, 32.0], atol=1e-9)
    assert depth == pytest.approx(7.5)


@pytest.mark.parametrize("angle_deg", [-20.0, 5.0, 17.0])
def test_a_point_above_the_axis_lands_focal_times_tangent_higher(angle_deg: float) -> None:
    camera = _camera()
    _, up, forward = camera.basis()
    direction = math.cos(math.radians(angle_deg)) * forward + math.sin(math.radians(angle_deg)) * up

    pixels, _ = camera.project(np.array(camera.position_m) + 3.0 * direction)

    expected_row = 32.0 - camera.focal_px * math.tan(math.radians(angle_deg))
    np.testing.assert_allclose(pixels, [32.0, expected_row], atol=1e-9)


def test_focal_length_spans_half_the_field_of_view() -> None:
    camera = Camera((0.0, 0.0, 1.0), 0.0, 0.0, 90.0, 64)

    assert camera.focal_px == pytest.approx(32.0)


def test_far_points_at_camera_height_lie_on_the_horizon_row() -> None:
    camera = _camera(tilt_deg=12.0)
    yaw = math.radians(camera.yaw_deg)
    far = np.array(camera.position_m) + 1e7 * np.array([math.cos(yaw), math.sin(yaw), 0.0])

    pixels, _ = camera.project(far)

    assert pixels[1] == pytest.approx(camera.horizon_row(), abs=1e-4)
    assert camera.horizon_row() == pytest.approx(
        32.0 - camera.focal_px * math.tan(math.radians(12.0)), 1e-6
    )


def test_pixel_rays_pass_through_their_pixel_centres() -> None:
    camera = _camera(size=8)
    rays = camera.pixel_rays()

    pixels, depth = camera.project(np.array(camera.position_m) + rays)

    rows, columns = np.meshgrid(np.arange(8) + 0.5, np.arange(8) + 0.5, indexing="ij")
    np.testing.assert_allclose(pixels[..., 0], columns, atol=1e-9)
    np.testing.assert_allclose(pixels[..., 1], rows, atol=1e-9)
    assert (depth > 0).all()


def test_the_camera_frame_is_orthonormal_and_level() -> None:
    basis = _camera().basis()

    np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-12)
    assert basis[0, 2] == 0.0  # no roll: the right vector is horizontal


def test_look_from_faces_the_target_and_tilted_onto_it_centres_it() -> None:
    target = (2.0, 3.0, 1.0)
    height_m, distance_m = 7.0, 4.0
    tilt_deg = math.degrees(math.atan2(height_m - target[2], distance_m))

    camera = look_from(target, height_m, distance_m, 130.0, tilt_deg, 40.0, 64)
    pixels, _ = camera.project(np.array(target))

    assert camera.height_m == height_m
    assert math.hypot(camera.position_m[0] - 2.0, camera.position_m[1] - 3.0) == pytest.approx(4.0)
    np.testing.assert_allclose(pixels, [32.0, 32.0], atol=1e-9)


@pytest.mark.parametrize(
    ("fov_deg", "tilt_deg", "size"),
    [(0.0, 0.0, 64), (180.0, 0.0, 64), (60.0, 95.0, 64), (60.0, 0.0, 0)],
)
def test_invalid_cameras_are_refused(fov_deg: float, tilt_deg: float, size: int) -> None:
    with pytest.raises(ValueError):
        Camera((0.0, 0.0, 1.0), 0.0, tilt_deg, fov_deg, size)
