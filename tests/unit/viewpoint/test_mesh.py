"""Mesh primitives: closed, outward-facing, and where they were asked to be."""

from __future__ import annotations

import numpy as np
import pytest

from viewpoint.mesh import Mesh, bounds_m, box, ellipsoid, frustum, normals, tapered_box
from viewpoint.objects import CLASSES, build


def _faces_point_outward(mesh: Mesh, center: np.ndarray) -> bool:
    for group in mesh:
        outward = group.corners_m.mean(axis=1) - center
        if not (np.einsum("ij,ij->i", normals(group.corners_m), outward) > 0).all():
            return False
    return True


@pytest.mark.parametrize(
    ("mesh", "center"),
    [
        (box((2.0, 1.0, 0.5), (1.0, 2.0, 3.0), (0.5, 0.5, 0.5)), np.array([1.0, 2.0, 3.0])),
        (tapered_box((2.0, 1.0), (1.0, 0.6), 0.0, 1.0, (1, 0, 0), 0.2), np.array([0.05, 0, 0.5])),
        (frustum(1.0, 0.5, 0.0, 2.0, 8, (0, 1, 0)), np.array([0.0, 0.0, 1.0])),
        (frustum(1.0, 0.0, 0.0, 2.0, 6, (0, 1, 0)), np.array([0.0, 0.0, 0.5])),
        (ellipsoid((1.0, 2.0, 0.5), (0.0, 1.0, 2.0), (0, 0, 1), (1, 1, 1)), np.array([0, 1.0, 2])),
    ],
)
def test_every_face_points_away_from_the_inside(mesh: Mesh, center: np.ndarray) -> None:
    assert _faces_point_outward(mesh, center)


def test_a_box_spans_its_size_around_its_centre() -> None:
    low, high = bounds_m(box((2.0, 1.0, 0.5), (1.0, 2.0, 3.0), (0.5, 0.5, 0.5)))

    np.testing.assert_allclose(low, [0.0, 1.5, 2.75])
    np.testing.assert_allclose(high, [2.0, 2.5, 3.25])


@pytest.mark.parametrize("label", range(len(CLASSES)))
def test_every_class_stands_on_the_ground_near_the_origin(label: int) -> None:
    mesh = build(label, np.random.default_rng(label))

    low, high = bounds_m(mesh)

    assert low[2] == pytest.approx(0.0, abs=0.05)
    assert 0.4 < high[2] < 9.0
    assert np.abs(np.concatenate([low[:2], high[:2]])).max() < 3.0
