"""Viewpoints: distributions of where a camera stands relative to the object it looks at.

A board's viewpoint is fixed by how it is mounted (height, tilt) and varies only in what walks
past (distance, heading). Two ways to place the camera, both real:

- *aimed* (pole boards): the camera's tilt is the board's and the main object's centre lies on
  the optical axis, so the horizontal distance follows from height and tilt,
  ``(h - centre height) / tan(tilt)``, clamped to ``distance_m``;
- *level* (eye level): height, tilt and distance are drawn apart; the camera pans to the object
  but keeps its tilt, so the object sits above or below the centre as geometry puts it.

Either way the camera zooms so the object fills most of the frame, like the crop a detector
would hand a classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Range = tuple[float, float]


def _check_range(name: str, value: Range) -> None:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {value}")


@dataclass(frozen=True)
class Viewpoint:
    name: str
    height_m: Range
    """Height of the camera above the ground."""
    tilt_deg: Range
    """Downward tilt of the optical axis."""
    distance_m: Range
    """Horizontal distance from the camera to the main object (the clamp, when aimed)."""
    aimed: bool
    """Whether the object's centre is on the optical axis (see the module's docstring)."""
    yaw_deg: Range = (0.0, 360.0)
    """Heading of the main object relative to the line of sight."""

    def __post_init__(self) -> None:
        for field in ("height_m", "tilt_deg", "distance_m", "yaw_deg"):
            _check_range(field, getattr(self, field))
        if self.height_m[0] <= 0.0:
            raise ValueError(f"height_m must be positive, got {self.height_m}")
        if self.distance_m[0] <= 0.0:
            raise ValueError(f"distance_m must be positive, got {self.distance_m}")
        if not (self.tilt_deg[0] >= -89.0 and self.tilt_deg[1] <= 89.0):
            raise ValueError(f"tilt_deg must lie within [-89, 89], got {self.tilt_deg}")


@dataclass(frozen=True)
class ViewpointMixture:
    """Several viewpoints, one drawn per frame with the given weights."""

    name: str
    parts: tuple[tuple[float, Viewpoint], ...]

    def __post_init__(self) -> None:
        if not self.parts or any(weight <= 0.0 for weight, _ in self.parts):
            raise ValueError(f"{self.name}: a mixture needs parts with positive weights")

    def pick(self, rng: np.random.Generator) -> Viewpoint:
        weights = np.array([weight for weight, _ in self.parts])
        return self.parts[int(rng.choice(len(self.parts), p=weights / weights.sum()))][1]


AnyViewpoint = Viewpoint | ViewpointMixture


def pick(viewpoint: AnyViewpoint, rng: np.random.Generator) -> Viewpoint:
    return viewpoint.pick(rng) if isinstance(viewpoint, ViewpointMixture) else viewpoint


# Distances of aimed viewpoints are only a safety clamp: the geometry decides.
_AIMED_DISTANCE_M: Range = (0.8, 30.0)


def pole(height_m: float, tilt_deg: float) -> Viewpoint:
    """A board on a pole: mounting height ±5 %, tilt ±3°, object centred on the axis."""
    return Viewpoint(
        name=f"pole_{height_m:g}m_{tilt_deg:g}deg",
        height_m=(height_m * 0.95, height_m * 1.05),
        tilt_deg=(tilt_deg - 3.0, tilt_deg + 3.0),
        distance_m=_AIMED_DISTANCE_M,
        aimed=True,
    )


EYE_LEVEL = Viewpoint(
    name="eye_level", height_m=(1.2, 1.8), tilt_deg=(0.0, 10.0), distance_m=(5.0, 10.0), aimed=False
)
"""Where pictures are usually taken from, and all the eye-level student ever sees."""

POLES: tuple[Viewpoint, ...] = (pole(4.0, 30.0), pole(6.0, 45.0), pole(8.0, 60.0), pole(10.0, 75.0))
"""The four demo boards' viewpoints, from a low pole looking ahead to a high one looking down."""

BROAD = ViewpointMixture(
    name="broad",
    parts=(
        (
            0.2,
            Viewpoint("broad_low", (1.0, 2.5), (-5.0, 20.0), (4.0, 12.0), aimed=False),
        ),
        (
            0.8,
            Viewpoint("broad_high", (2.5, 12.0), (15.0, 85.0), _AIMED_DISTANCE_M, aimed=True),
        ),
    ),
)
"""Every viewpoint from eye level to straight down, for the teacher: it covers the boards'
mountings among many others and never sees a board's own frames."""

_ALL: tuple[AnyViewpoint, ...] = (EYE_LEVEL, *POLES, BROAD)
NAMED: dict[str, AnyViewpoint] = {v.name: v for v in _ALL}


def by_name(name: str) -> AnyViewpoint:
    try:
        return NAMED[name]
    except KeyError:
        raise ValueError(f"unknown viewpoint {name!r}; known: {', '.join(NAMED)}") from None
