"""Meshes as groups of equal-sized flat faces, and the primitives objects are built from.

A face is a convex planar polygon with its corners counter-clockwise seen from outside, so its
outward normal follows from the corners and the renderer can cull faces turned away. Faces of
one size sit in one array, so building, moving and projecting a mesh is a few numpy operations
per group instead of Python work per face (scenes are built for every frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Color = tuple[float, float, float]
"""Linear RGB in [0, 1]."""


@dataclass(frozen=True)
class FaceGroup:
    corners_m: np.ndarray
    """``(F, K, 3)``: F faces of K corners each, counter-clockwise seen from outside."""
    colors: np.ndarray
    """``(F, 3)`` RGB in [0, 1]."""

    def __post_init__(self) -> None:
        if self.corners_m.ndim != 3 or self.corners_m.shape[1] < 3 or self.corners_m.shape[2] != 3:
            raise ValueError(f"corners_m must be (F, K>=3, 3), got {self.corners_m.shape}")
        if self.colors.shape != (self.corners_m.shape[0], 3):
            raise ValueError(
                f"colors must be ({self.corners_m.shape[0]}, 3), got {self.colors.shape}"
            )


Mesh = list[FaceGroup]


def normals(corners_m: np.ndarray) -> np.ndarray:
    """Unit outward normals ``(F, 3)`` by Newell's method (exact for planar faces, and robust to
    the repeated corner of a cone's apex)."""
    summed = np.cross(corners_m, np.roll(corners_m, -1, axis=1)).sum(axis=1)
    length = np.linalg.norm(summed, axis=1, keepdims=True)
    return summed / np.where(length > 0.0, length, 1.0)


def rotation_z(angle_deg: float) -> np.ndarray:
    a = np.radians(angle_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_y(angle_deg: float) -> np.ndarray:
    a = np.radians(angle_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_x(angle_deg: float) -> np.ndarray:
    a = np.radians(angle_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def transformed(
    mesh: Mesh, rotation: np.ndarray, offset_m: Sequence[float] = (0.0, 0.0, 0.0)
) -> Mesh:
    """``mesh`` rotated about the origin, then moved by ``offset_m``."""
    shift = np.asarray(offset_m, dtype=np.float64)
    return [FaceGroup(g.corners_m @ rotation.T + shift, g.colors) for g in mesh]


def _colors(count: int, color: Color | Sequence[Color]) -> np.ndarray:
    array = np.asarray(color, dtype=np.float64)
    if array.ndim == 1:
        return np.broadcast_to(array, (count, 3)).copy()
    if array.shape != (count, 3):
        raise ValueError(f"expected one colour or {count}, got {array.shape}")
    return array


# Corner indices of a box's faces, counter-clockwise from outside, over the corners numbered
# bottom (z0) 0..3 and top (z1) 4..7, each ring counter-clockwise seen from above.
_BOX_FACES = np.array(
    [
        [3, 2, 1, 0],  # bottom
        [4, 5, 6, 7],  # top
        [0, 1, 5, 4],  # -y side
        [1, 2, 6, 5],  # +x side
        [2, 3, 7, 6],  # +y side
        [3, 0, 4, 7],  # -x side
    ]
)
BOX_TOP = 1
"""Index of the top face among a box's faces, for meshes that colour it apart (a car's roof)."""


def tapered_box(
    bottom_m: tuple[float, float],
    top_m: tuple[float, float],
    z0_m: float,
    z1_m: float,
    color: Color | Sequence[Color],
    top_shift_m: float = 0.0,
) -> Mesh:
    """A box from ``z0_m`` to ``z1_m`` whose bottom and top are centred rectangles (x length,
    y width), the top moved by ``top_shift_m`` along x: a car's cabin; a plain box when the
    rectangles are equal. ``color``: one colour or one per face (bottom, top, -y, +x, +y, -x)."""

    def ring(size: tuple[float, float], z: float, shift: float) -> np.ndarray:
        hx, hy = size[0] / 2.0, size[1] / 2.0
        return np.array(
            [[shift - hx, -hy, z], [shift + hx, -hy, z], [shift + hx, hy, z], [shift - hx, hy, z]]
        )

    corners = np.concatenate((ring(bottom_m, z0_m, 0.0), ring(top_m, z1_m, top_shift_m)))
    return [FaceGroup(corners[_BOX_FACES], _colors(6, color))]


def box(size_m: tuple[float, float, float], center_m: Sequence[float], color: Color) -> Mesh:
    """An axis-aligned box of ``size_m`` (x, y, z) centred on ``center_m``."""
    sx, sy, sz = size_m
    mesh = tapered_box((sx, sy), (sx, sy), -sz / 2.0, sz / 2.0, color)
    return transformed(mesh, np.eye(3), center_m)


def frustum(
    radius_bottom_m: float,
    radius_top_m: float,
    z0_m: float,
    z1_m: float,
    sides: int,
    side_color: Color,
    cap_color: Color | None = None,
) -> Mesh:
    """A vertical prism of ``sides`` sides between two circles: a cylinder when the radii agree,
    a cone when the top radius is zero (no top cap then). Caps take ``cap_color`` (default the
    side's)."""
    if sides < 3:
        raise ValueError(f"sides must be at least 3, got {sides}")
    angles = np.linspace(0.0, 2.0 * np.pi, sides, endpoint=False)
    ring = np.stack((np.cos(angles), np.sin(angles), np.zeros(sides)), axis=1)
    bottom = ring * radius_bottom_m + np.array([0.0, 0.0, z0_m])
    top = ring * radius_top_m + np.array([0.0, 0.0, z1_m])
    following = np.roll(np.arange(sides), -1)
    side_faces = np.stack((bottom, bottom[following], top[following], top), axis=1)
    cap = side_color if cap_color is None else cap_color
    mesh = [
        FaceGroup(side_faces, _colors(sides, side_color)),
        FaceGroup(bottom[::-1][None], _colors(1, cap)),
    ]
    if radius_top_m > 0.0:
        mesh.append(FaceGroup(top[None], _colors(1, cap)))
    return mesh


def ellipsoid(
    radii_m: tuple[float, float, float],
    center_m: Sequence[float],
    color: Color,
    top_color: Color | None = None,
    bands: int = 4,
    sides: int = 8,
) -> Mesh:
    """A low-polygon ellipsoid: ``bands`` latitude bands of ``sides`` faces, triangles at the
    poles and quads between. The upper half takes ``top_color`` if given (a head's hair)."""
    if bands < 2 or sides < 3:
        raise ValueError(f"need bands >= 2 and sides >= 3, got {bands} and {sides}")
    latitudes = np.linspace(np.pi / 2.0, -np.pi / 2.0, bands + 1)
    longitudes = np.linspace(0.0, 2.0 * np.pi, sides, endpoint=False)
    lat, lon = np.meshgrid(latitudes, longitudes, indexing="ij")
    grid = np.stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)), axis=-1)
    grid = grid * np.asarray(radii_m) + np.asarray(center_m, dtype=np.float64)
    following = np.roll(np.arange(sides), -1)
    # Quads (upper-left, lower-left, lower-right, upper-right) going down in latitude are
    # counter-clockwise from outside; at the poles two of their corners coincide.
    quads = np.stack((grid[:-1], grid[1:], grid[1:, following], grid[:-1, following]), axis=2)
    top_tris = quads[0][:, [0, 1, 2]]
    bottom_tris = quads[-1][:, [0, 1, 3]]
    upper = color if top_color is None else top_color
    middle = quads[1:-1].reshape(-1, 4, 3)
    middle_colors = [
        _colors(sides, upper if b < bands // 2 else color) for b in range(1, bands - 1)
    ]
    mesh = [
        FaceGroup(top_tris, _colors(sides, upper)),
        FaceGroup(bottom_tris, _colors(sides, color)),
    ]
    if middle_colors:
        mesh.append(FaceGroup(middle, np.concatenate(middle_colors)))
    return mesh


def bounds_m(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper corners of the mesh's axis-aligned bounding box."""
    points = np.concatenate([g.corners_m.reshape(-1, 3) for g in mesh])
    return points.min(axis=0), points.max(axis=0)
