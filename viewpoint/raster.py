"""Rendering a scene: per-pixel ground and sky in numpy, objects by the painter's algorithm.

Objects are drawn face by face, far to near, after culling the faces turned away, and each face
is one flat-shaded polygon filled by Pillow's scan converter (C): a frame holds a hundred or so
faces, so the filling costs little next to numpy's per-call overhead, and no per-pixel depth
test is needed because objects are separate convex-ish parts standing on the ground. The ground
and sky depend on every pixel's ray, so they are computed per pixel, vectorised. Objects and
shadows are drawn at twice the resolution and box-filtered down, which anti-aliases their edges.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from viewpoint.mesh import normals
from viewpoint.scene import ASPHALT, GRASS, PAVING, Ground, Lighting, Scene

SUPERSAMPLE = 2
NEAR_M = 0.05
"""Faces with a corner closer than this (or behind the camera) are dropped, not clipped: only
distractors far off to the side ever come that close."""
_MAX_RAY_M = 1e4


def _hash01(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """A cheap integer hash of lattice cells to [0, 1): value noise without a noise table."""
    h = (ix * 0x9E3779B1 + iy * 0x85EBCA77 + salt).astype(np.int64)
    h = h ^ (h >> 15)
    h = h * 0x2C1B3C6D
    h = h ^ (h >> 12)
    return (h & 0xFFFF).astype(np.float32) / np.float32(65536.0)


def _ground_albedo(ground: Ground, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Ground colour ``(..., 3)`` at ground points, before lighting."""
    angle = np.radians(ground.angle_deg)
    u = gx * np.cos(angle) + gy * np.sin(angle)
    v = -gx * np.sin(angle) + gy * np.cos(angle)
    cell = ground.cell_m
    iu, iv = np.floor(u / cell).astype(np.int64), np.floor(v / cell).astype(np.int64)
    coarse = _hash01(iu, iv, ground.salt) - 0.5
    fine_u = np.floor(u / 0.12).astype(np.int64)
    fine_v = np.floor(v / 0.12).astype(np.int64)
    fine = _hash01(fine_u, fine_v, ground.salt + 1) - 0.5
    if ground.kind == GRASS:
        shade = 1.0 + ground.contrast * (1.2 * coarse + 1.5 * fine)
    elif ground.kind == PAVING:
        # Grout lines between tiles, each tile a little lighter or darker.
        fu, fv = u / cell - iu, v / cell - iv
        grout = (np.minimum(fu, fv) < 0.07).astype(np.float32)
        shade = (1.0 + ground.contrast * 2.0 * coarse + 0.15 * fine) * (1.0 - 0.35 * grout)
    else:
        shade = 1.0 + ground.contrast * coarse + 0.25 * fine
    albedo = shade[..., None] * np.asarray(ground.color, dtype=np.float32)
    if ground.kind == ASPHALT and ground.marking is not None:
        # A dashed line across the street, a few metres off the object.
        line = (np.abs(v - 3.0) < 0.07) & ((u % 3.0) < 1.8)
        albedo = np.where(line[..., None], np.asarray(ground.marking, dtype=np.float32), albedo)
    return albedo


def _background(scene: Scene) -> np.ndarray:
    """Ground and sky ``(S, S, 3)`` in [0, 1], the ground lit as if nothing cast a shadow."""
    camera, light = scene.camera, scene.lighting
    rays = camera.pixel_rays().astype(np.float32)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    dz = rays[..., 2]
    below = dz < -1e-4
    distance = np.minimum(camera.height_m / np.where(below, -dz, 1.0), _MAX_RAY_M)
    x0, y0, _ = camera.position_m
    gx = np.float32(x0) + distance * rays[..., 0]
    gy = np.float32(y0) + distance * rays[..., 1]
    lit = light.ambient + light.sun * light.sun_direction[2]
    albedo = _ground_albedo(scene.ground, gx, gy) * np.float32(lit)
    horizon = np.asarray(light.sky_horizon, dtype=np.float32)
    fade = (1.0 - np.exp(-distance / light.fog_m))[..., None]
    ground = albedo * (1.0 - fade) + horizon * fade
    zenith = np.asarray(light.sky_zenith, dtype=np.float32)
    up = np.sqrt(np.clip(dz, 0.0, 1.0))[..., None]
    sky = horizon * (1.0 - up) + zenith * up
    return np.where(below[..., None], ground, sky)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class _Faces:
    """Every face of a scene in one array, each padded to the most corners any face has by
    repeating its last corner (a zero-length edge changes neither the polygon nor its normal),
    so that projecting and culling are one numpy call per frame."""

    def __init__(self, scene: Scene) -> None:
        groups = [group for mesh in scene.meshes for group in mesh]
        most = max(g.corners_m.shape[1] for g in groups)
        self.corners_m = np.concatenate(
            [g.corners_m[:, np.minimum(np.arange(most), g.corners_m.shape[1] - 1)] for g in groups]
        )
        self.normals = normals(self.corners_m)
        self.centroids = np.concatenate([g.corners_m.mean(axis=1) for g in groups])
        self.colors = np.concatenate([g.colors for g in groups])


def _polygons(scene: Scene, corners_m: np.ndarray) -> tuple[list[list[float]], np.ndarray]:
    """Flat (x0, y0, x1, y1, ...) pixel coordinates of every face at the drawing resolution, and
    whether each face lies wholly in front of the near plane."""
    pixels, depth = scene.camera.project(corners_m)
    coords: list[list[float]] = (pixels * SUPERSAMPLE).reshape(len(corners_m), -1).tolist()
    return coords, np.asarray((depth > NEAR_M).all(axis=1))


def _shadow_mask(scene: Scene, faces: _Faces, size: int) -> Image.Image:
    """Where the objects' shadows fall on the ground: the faces lit by the sun, projected along
    its rays onto ``z = 0``, cover the shadow of a closed object exactly."""
    sun = np.asarray(scene.lighting.sun_direction)
    mask = Image.new("L", (size, size), 0)
    lit = faces.normals @ sun > 0.0
    projected = faces.corners_m - (faces.corners_m[..., 2:3] / sun[2]) * sun
    coords, in_front = _polygons(scene, projected)
    draw = ImageDraw.Draw(mask)
    for index in np.flatnonzero(lit & in_front):
        draw.polygon(coords[index], fill=255)
    return mask


def _draw_objects(canvas: Image.Image, scene: Scene, faces: _Faces) -> None:
    light = scene.lighting
    eye = np.asarray(scene.camera.position_m)
    to_eye = eye - faces.centroids
    facing = np.einsum("ij,ij->i", faces.normals, to_eye) > 0.0
    coords, in_front = _polygons(scene, faces.corners_m)
    sun = np.asarray(light.sun_direction)
    shade = light.ambient + light.sun * np.clip(faces.normals @ sun, 0.0, None)
    fills = [tuple(c) for c in _to_uint8(faces.colors * shade[:, None]).tolist()]
    visible = np.flatnonzero(facing & in_front)
    distance = np.linalg.norm(to_eye[visible], axis=1)
    draw = ImageDraw.Draw(canvas)
    for index in visible[np.argsort(-distance, kind="stable")]:
        draw.polygon(coords[index], fill=fills[index])


def render(scene: Scene) -> np.ndarray:
    """The frame ``(S, S, 3)`` uint8 RGB that ``scene.camera`` sees."""
    size = scene.camera.image_size
    big = size * SUPERSAMPLE
    background = Image.fromarray(_to_uint8(_background(scene)))
    canvas = background.resize((big, big), Image.Resampling.NEAREST)
    faces = _Faces(scene)
    light = scene.lighting
    lit = light.ambient + light.sun * light.sun_direction[2]
    darkening = light.ambient / lit
    shadowed = canvas.point((np.arange(256) * darkening).astype(np.int64).tolist() * 3)
    canvas = Image.composite(shadowed, canvas, _shadow_mask(scene, faces, big))
    _draw_objects(canvas, scene, faces)
    frame = np.asarray(canvas.reduce(SUPERSAMPLE))
    return _noisy(frame, light)


def _noisy(frame: np.ndarray, light: Lighting) -> np.ndarray:
    if light.noise_std <= 0.0:
        return frame
    rng = np.random.default_rng(light.noise_seed)
    noise = rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(light.noise_std * 255.0)
    return np.clip(frame + noise, 0.0, 255.0).astype(np.uint8)
