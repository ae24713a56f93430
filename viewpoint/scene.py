"""A scene drawn from a seed: the main object (whose class is the label), clutter around it,
ground, sky, sun, and the camera of one viewpoint looking at it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from viewpoint.camera import Camera, look_from
from viewpoint.mesh import Color, Mesh, bounds_m, rotation_z, transformed
from viewpoint.objects import CLASSES, build, clutter, hsv
from viewpoint.viewpoints import AnyViewpoint, pick

ASPHALT, PAVING, GRASS = 0, 1, 2


@dataclass(frozen=True)
class Ground:
    kind: int
    """``ASPHALT``, ``PAVING`` or ``GRASS``."""
    color: Color
    cell_m: float
    """Size of the texture's repeating unit (a paving tile, a patch of grass)."""
    contrast: float
    angle_deg: float
    """Orientation of the texture (tile rows, lane markings) on the ground."""
    salt: int
    """Seed of the texture's hash noise."""
    marking: Color | None
    """Colour of a lane marking across the asphalt, if any."""


@dataclass(frozen=True)
class Lighting:
    sun_direction: tuple[float, float, float]
    """Unit vector towards the sun."""
    ambient: float
    sun: float
    """Strength of the direct light on a surface facing the sun."""
    sky_horizon: Color
    sky_zenith: Color
    fog_m: float
    """Distance over which the far ground fades into the horizon's colour."""
    noise_std: float
    """Standard deviation of the sensor's noise, in [0, 1] units."""
    noise_seed: int
    """Seed of the sensor's noise, so that a frame is a pure function of its scene."""


@dataclass(frozen=True)
class Scene:
    label: int
    camera: Camera
    meshes: tuple[Mesh, ...]
    """World coordinates; the main object first, then the distractors."""
    ground: Ground
    lighting: Lighting


def _placed(mesh: Mesh, heading_deg: float, position_m: tuple[float, float]) -> Mesh:
    return transformed(mesh, rotation_z(heading_deg), (position_m[0], position_m[1], 0.0))


def _footprint_radius_m(mesh: Mesh) -> float:
    """Radius of the smallest vertical cylinder about the object's origin that holds it."""
    points = np.concatenate([g.corners_m.reshape(-1, 3) for g in mesh])
    return float(np.hypot(points[:, 0], points[:, 1]).max())


def _ground(rng: np.random.Generator) -> Ground:
    kind = int(rng.integers(3))
    if kind == GRASS:
        color = hsv(rng.uniform(0.12, 0.36), rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.6))
        cell_m, contrast = rng.uniform(0.8, 2.5), rng.uniform(0.15, 0.35)
    elif kind == PAVING:
        color = hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.35, 0.75))
        cell_m, contrast = rng.uniform(0.3, 0.9), rng.uniform(0.05, 0.2)
    else:
        color = hsv(rng.random(), rng.uniform(0.0, 0.12), rng.uniform(0.2, 0.5))
        cell_m, contrast = rng.uniform(1.0, 3.0), rng.uniform(0.05, 0.15)
    marking = None
    if kind == ASPHALT and rng.random() < 0.6:
        marking = hsv(rng.uniform(0.1, 0.17), rng.uniform(0.0, 0.8), rng.uniform(0.7, 0.95))
    return Ground(
        kind, color, cell_m, contrast, rng.uniform(0.0, 180.0), int(rng.integers(1 << 30)), marking
    )


def _lighting(rng: np.random.Generator) -> Lighting:
    elevation, azimuth = np.radians(rng.uniform(20.0, 75.0)), rng.uniform(0.0, 2.0 * np.pi)
    sun_direction = (
        math.cos(elevation) * math.cos(azimuth),
        math.cos(elevation) * math.sin(azimuth),
        math.sin(elevation),
    )
    ambient = rng.uniform(0.3, 0.6)
    sun = rng.uniform(0.85, 1.15) - ambient
    overcast = rng.random() < 0.3
    horizon = hsv(rng.uniform(0.5, 0.65), rng.uniform(0.0, 0.25), rng.uniform(0.7, 1.0))
    zenith = (
        hsv(rng.uniform(0.5, 0.7), rng.uniform(0.0, 0.15), rng.uniform(0.5, 0.85))
        if overcast
        else hsv(rng.uniform(0.55, 0.66), rng.uniform(0.4, 0.8), rng.uniform(0.55, 0.95))
    )
    return Lighting(
        sun_direction,
        ambient,
        sun * (0.4 if overcast else 1.0),
        horizon,
        zenith,
        rng.uniform(40.0, 200.0),
        rng.uniform(0.0, 0.04),
        int(rng.integers(1 << 32)),
    )


def _distractors(
    rng: np.random.Generator, main_radius_m: float, toward_camera_deg: float
) -> list[Mesh]:
    """Clutter beside or behind the main object, never between it and the camera."""
    meshes: list[Mesh] = []
    for _ in range(int(rng.choice(3, p=[0.3, 0.4, 0.3]))):
        mesh = clutter(rng) if rng.random() < 0.75 else build(int(rng.integers(len(CLASSES))), rng)
        radius = _footprint_radius_m(mesh)
        gap = main_radius_m + radius + rng.uniform(0.3, 3.0)
        direction = np.radians(toward_camera_deg + 180.0 + rng.uniform(-110.0, 110.0))
        position = (gap * math.cos(direction), gap * math.sin(direction))
        meshes.append(_placed(mesh, rng.uniform(0.0, 360.0), position))
    return meshes


def _zoom_fov_deg(camera: Camera, mesh: Mesh, margin: float) -> float:
    """The field of view in which ``mesh`` fills ``1 / margin`` of the frame's half-width, seen
    from ``camera`` (whatever its own field of view)."""
    points = np.concatenate([g.corners_m.reshape(-1, 3) for g in mesh])
    cam = camera.to_camera(points)
    depth = np.maximum(cam[:, 2], 0.05)
    half_tan = np.abs(cam[:, :2] / depth[:, None]).max() * margin
    return float(np.clip(np.degrees(2.0 * np.arctan(half_tan)), 4.0, 120.0))


def sample_scene(viewpoint: AnyViewpoint, rng: np.random.Generator, image_size: int) -> Scene:
    """A random scene seen from ``viewpoint``; the label is uniform over the classes."""
    view = pick(viewpoint, rng)
    label = int(rng.integers(len(CLASSES)))
    # The line of sight runs along -x (camera at +x): headings are relative to it.
    main = _placed(build(label, rng), rng.uniform(*view.yaw_deg), (0.0, 0.0))
    low, high = bounds_m(main)
    center = (low + high) / 2.0
    height_m = rng.uniform(*view.height_m)
    tilt_deg = rng.uniform(*view.tilt_deg)
    # Where a detector's box centre would be: near the middle of the object, not on it exactly.
    aim_z = center[2] + rng.uniform(-0.12, 0.12) * (high[2] - low[2])
    # Drawn even when aimed, so that every viewpoint takes the same draws from a seed: one seed
    # is one scene (object, clutter, ground, light), whatever the viewpoint it is seen from.
    distance_m = rng.uniform(*view.distance_m)
    if view.aimed:
        distance_m = (height_m - aim_z) / max(math.tan(math.radians(tilt_deg)), 1e-3)
        distance_m = float(np.clip(distance_m, *view.distance_m))
    bearing_deg = rng.uniform(-4.0, 4.0)
    target = (float(center[0]), float(center[1]), float(aim_z))
    provisional = look_from(target, height_m, distance_m, bearing_deg, tilt_deg, 60.0, image_size)
    fov_deg = _zoom_fov_deg(provisional, main, rng.uniform(1.15, 1.6))
    camera = look_from(target, height_m, distance_m, bearing_deg, tilt_deg, fov_deg, image_size)
    radius = _footprint_radius_m(main)
    meshes = (main, *_distractors(rng, radius, bearing_deg))
    return Scene(label, camera, meshes, _ground(rng), _lighting(rng))


def scene_rng(seed: int, split: int, index: int) -> np.random.Generator:
    """The generator of frame ``index`` of a set: the split code comes first in the seed words,
    so a training frame and an evaluation frame can never share a seed (see ``dataset``)."""
    # Each word must fit 32 bits: a longer one would change the entropy's length and let two
    # different triples collide.
    for name, value in (("seed", seed), ("split", split), ("index", index)):
        if not 0 <= value < 1 << 32:
            raise ValueError(f"{name} must be in [0, 2**32), got {value}")
    return np.random.default_rng([split, seed, index])
