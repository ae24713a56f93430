"""A pinhole camera on a pole: where it stands, where it looks, how wide it sees.

World frame: x east, y north, z up, metres, the ground is ``z = 0``. Camera frame: x right, y up,
z along the optical axis (depth). Image: column ``u`` to the right and row ``v`` downwards, in
pixels, continuous, with pixel ``(row i, column j)`` covering ``[j, j + 1) × [i, i + 1)``; so the
optical axis meets the image at ``(S/2, S/2)`` for a side of ``S`` pixels. No roll: a board is
mounted level, so the horizon is always a horizontal line of the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    position_m: tuple[float, float, float]
    """Optical centre; its ``z`` is the height above the ground."""
    yaw_deg: float
    """Heading of the optical axis, counter-clockwise from +x."""
    tilt_deg: float
    """Downward tilt of the optical axis below the horizontal (negative looks up)."""
    fov_deg: float
    """Full field of view across the square image, the same vertically and horizontally."""
    image_size: int
    """Side of the square image, pixels."""

    def __post_init__(self) -> None:
        if not 0.0 < self.fov_deg < 180.0:
            raise ValueError(f"fov_deg must be in (0, 180), got {self.fov_deg}")
        if not -90.0 <= self.tilt_deg <= 90.0:
            raise ValueError(f"tilt_deg must be in [-90, 90], got {self.tilt_deg}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be at least 1, got {self.image_size}")

    @property
    def height_m(self) -> float:
        return self.position_m[2]

    @property
    def focal_px(self) -> float:
        return self.image_size / 2.0 / math.tan(math.radians(self.fov_deg) / 2.0)

    def basis(self) -> np.ndarray:
        """Rows: the camera's right, up and forward unit vectors in world coordinates."""
        yaw, tilt = math.radians(self.yaw_deg), math.radians(self.tilt_deg)
        forward = (math.cos(tilt) * math.cos(yaw), math.cos(tilt) * math.sin(yaw), -math.sin(tilt))
        right = (math.sin(yaw), -math.cos(yaw), 0.0)
        up = (math.sin(tilt) * math.cos(yaw), math.sin(tilt) * math.sin(yaw), math.cos(tilt))
        return np.array([right, up, forward])

    def to_camera(self, points_m: np.ndarray) -> np.ndarray:
        """World points ``(..., 3)`` in the camera frame (x right, y up, z depth)."""
        return (np.asarray(points_m, dtype=np.float64) - np.array(self.position_m)) @ self.basis().T

    def project(self, points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates ``(..., 2)`` as (column, row) and depths ``(...)`` of world points.

        Points at or behind the optical centre have no image: their depth is ``<= 0`` and their
        pixel coordinates are meaningless, so callers drop them by depth first."""
        cam = self.to_camera(points_m)
        depth = cam[..., 2]
        safe = np.where(depth > 1e-9, depth, 1e-9)
        half, focal = self.image_size / 2.0, self.focal_px
        pixels = np.stack(
            (half + focal * cam[..., 0] / safe, half - focal * cam[..., 1] / safe), -1
        )
        return pixels, depth

    def pixel_rays(self, size: int | None = None) -> np.ndarray:
        """World directions ``(S, S, 3)`` (not unit length) through the pixel centres of an image
        of ``size`` pixels a side (the camera's own by default) with the same field of view."""
        side = self.image_size if size is None else size
        focal = side / 2.0 / math.tan(math.radians(self.fov_deg) / 2.0)
        offsets = (np.arange(side, dtype=np.float64) + 0.5 - side / 2.0) / focal
        right, up, forward = self.basis()
        # Row i looks down by offsets[i], column j looks right by offsets[j].
        return (
            forward[None, None, :]
            + offsets[None, :, None] * right[None, None, :]
            - offsets[:, None, None] * up[None, None, :]
        )

    def horizon_row(self) -> float:
        """Row of the horizon (the image of directions parallel to the ground)."""
        return self.image_size / 2.0 - self.focal_px * math.tan(math.radians(self.tilt_deg))


def look_from(
    target_m: tuple[float, float, float],
    height_m: float,
    distance_m: float,
    bearing_deg: float,
    tilt_deg: float,
    fov_deg: float,
    image_size: int,
) -> Camera:
    """A camera ``distance_m`` (horizontal) from ``target_m`` at ``height_m``, panned to face it
    from the direction ``bearing_deg`` (counter-clockwise from +x, seen from the target) and tilted
    down by ``tilt_deg`` whatever the target's elevation: a pole camera pans freely but its tilt
    is the board's own."""
    if distance_m <= 0.0:
        raise ValueError(f"distance_m must be positive, got {distance_m}")
    bearing = math.radians(bearing_deg)
    position = (
        target_m[0] + distance_m * math.cos(bearing),
        target_m[1] + distance_m * math.sin(bearing),
        height_m,
    )
    yaw_deg = math.degrees(bearing) + 180.0
    return Camera(position, yaw_deg, tilt_deg, fov_deg, image_size)
