"""The object classes of the world, each a random instance built in its own frame.

An object stands on the ground at the origin (``z = 0``), its length along +x. Classes were
chosen so that a side view and a view from above look unlike each other: a car is a profile
with wheels from the side and a rectangle in a rectangle from above, a street lamp a tall mast
from the side and a short bar from above, a tree a crown on a trunk from the side and a disc from
above, and so on. Sizes, proportions, poses and colours vary per instance; body colours are
drawn from one palette for every class, so colour alone does not tell the class.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import numpy as np

from viewpoint.mesh import (
    BOX_TOP,
    Color,
    Mesh,
    box,
    ellipsoid,
    frustum,
    rotation_x,
    rotation_y,
    tapered_box,
    transformed,
)

CLASSES: tuple[str, ...] = ("car", "person", "tree", "traffic_cone", "bench", "street_lamp")
"""Class names in label order: label ``i`` is ``CLASSES[i]``."""


def hsv(hue: float, saturation: float, value: float) -> Color:
    return colorsys.hsv_to_rgb(hue % 1.0, saturation, value)


def any_color(rng: np.random.Generator) -> Color:
    """The shared palette for painted or dyed surfaces: any hue, mostly saturated."""
    return hsv(rng.random(), rng.uniform(0.25, 0.95), rng.uniform(0.35, 0.95))


def dull_color(rng: np.random.Generator, value: tuple[float, float] = (0.1, 0.35)) -> Color:
    """Tyres, glass, metal, bark: dark and unsaturated."""
    return hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(*value))


def car(rng: np.random.Generator) -> Mesh:
    length, width = rng.uniform(3.6, 4.9), rng.uniform(1.6, 1.95)
    clearance, body_h = rng.uniform(0.15, 0.3), rng.uniform(0.5, 0.8)
    cabin_h, cabin_len = rng.uniform(0.4, 0.65), length * rng.uniform(0.4, 0.62)
    body, glass = any_color(rng), dull_color(rng, (0.1, 0.4))
    z_body = clearance + body_h
    taper = rng.uniform(0.6, 0.85)
    cabin_colors = [glass] * 6
    cabin_colors[BOX_TOP] = body
    mesh = tapered_box((length, width), (length, width), clearance, z_body, body)
    mesh += transformed(
        tapered_box(
            (cabin_len, width * 0.92),
            (cabin_len * taper, width * rng.uniform(0.78, 0.9)),
            z_body,
            z_body + cabin_h,
            cabin_colors,
            top_shift_m=-cabin_len * (1.0 - taper) * rng.uniform(0.0, 0.5),
        ),
        np.eye(3),
        (length * rng.uniform(-0.15, 0.05), 0.0, 0.0),
    )
    radius, tyre = rng.uniform(0.28, 0.38), dull_color(rng, (0.05, 0.2))
    wheel = transformed(frustum(radius, radius, -0.11, 0.11, 8, tyre), rotation_x(90.0))
    axle_x = length / 2.0 - rng.uniform(0.6, 0.9)
    for x in (-axle_x, axle_x):
        for y in (-width / 2.0 + 0.08, width / 2.0 - 0.08):
            mesh += transformed(wheel, np.eye(3), (x, y, radius))
    return mesh


def person(rng: np.random.Generator) -> Mesh:
    height = rng.uniform(1.5, 1.95)
    leg_len, torso_len = 0.47 * height, 0.3 * height
    head_r = rng.uniform(0.095, 0.12)
    shoulders, depth = rng.uniform(0.36, 0.5), rng.uniform(0.2, 0.3)
    trousers, shirt = any_color(rng), any_color(rng)
    skin = hsv(rng.uniform(0.02, 0.1), rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.95))
    hair = dull_color(rng, (0.05, 0.6))
    stride_deg = rng.uniform(-25.0, 25.0)
    mesh: Mesh = []
    for side, swing in ((-1.0, stride_deg), (1.0, -stride_deg)):
        leg = box((0.15, 0.15, leg_len), (0.0, 0.0, -leg_len / 2.0), trousers)
        mesh += transformed(leg, rotation_y(swing), (0.0, side * shoulders * 0.22, leg_len))
        arm = box((0.1, 0.1, torso_len * 1.05), (0.0, 0.0, -torso_len * 0.52), shirt)
        mesh += transformed(
            arm,
            rotation_y(-swing * 1.2),
            (0.0, side * (shoulders / 2.0 + 0.05), leg_len + torso_len),
        )
    mesh += box((depth, shoulders, torso_len), (0.0, 0.0, leg_len + torso_len / 2.0), shirt)
    neck_top = leg_len + torso_len + 0.05
    mesh += ellipsoid(
        (head_r, head_r * 0.9, head_r * 1.15), (0.0, 0.0, neck_top + head_r), skin, hair
    )
    return mesh


def tree(rng: np.random.Generator) -> Mesh:
    trunk_h, trunk_r = rng.uniform(0.9, 2.4), rng.uniform(0.1, 0.25)
    bark = hsv(rng.uniform(0.03, 0.12), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.45))
    leaves = any_color(rng)
    mesh = frustum(trunk_r, trunk_r * 0.8, 0.0, trunk_h + 0.3, 6, bark)
    if rng.random() < 0.5:
        # A conifer: stacked cones, each narrower than the one below.
        radius, z = rng.uniform(1.0, 2.0), trunk_h
        for _ in range(int(rng.integers(1, 4))):
            tier_h = radius * rng.uniform(1.2, 1.8)
            mesh += frustum(radius, 0.0, z, z + tier_h, 8, leaves)
            z += tier_h * 0.5
            radius *= rng.uniform(0.6, 0.8)
    else:
        radius = rng.uniform(1.0, 2.2)
        squash = rng.uniform(0.7, 1.1)
        center = (0.0, 0.0, trunk_h + radius * squash * 0.8)
        mesh += ellipsoid((radius, radius, radius * squash), center, leaves, bands=4, sides=8)
    return mesh


def traffic_cone(rng: np.random.Generator) -> Mesh:
    height, base = rng.uniform(0.45, 0.95), rng.uniform(0.32, 0.5)
    paint, stripe = any_color(rng), any_color(rng)
    plate_h = rng.uniform(0.03, 0.06)
    mesh = box((base, base, plate_h), (0.0, 0.0, plate_h / 2.0), paint)
    r_bottom, r_top = base * rng.uniform(0.36, 0.45), base * rng.uniform(0.05, 0.1)
    # Three bands of the frustum, the middle one the reflective stripe.
    cuts = [0.0, rng.uniform(0.3, 0.45), rng.uniform(0.6, 0.75), 1.0]
    for band in range(3):
        lo, hi = cuts[band], cuts[band + 1]
        mesh += frustum(
            r_bottom + (r_top - r_bottom) * lo,
            r_bottom + (r_top - r_bottom) * hi,
            plate_h + height * lo,
            plate_h + height * hi,
            8,
            stripe if band == 1 else paint,
        )
    return mesh


def bench(rng: np.random.Generator) -> Mesh:
    length, depth = rng.uniform(1.3, 2.1), rng.uniform(0.4, 0.55)
    seat_z, slab = rng.uniform(0.4, 0.5), rng.uniform(0.04, 0.08)
    back_h = rng.uniform(0.3, 0.5)
    wood, metal = any_color(rng), dull_color(rng)
    mesh = box((length, depth, slab), (0.0, 0.0, seat_z), wood)
    back_y = depth / 2.0 - 0.03
    back = box((length, 0.05, back_h), (0.0, 0.0, back_h / 2.0), wood)
    mesh += transformed(back, rotation_x(-rng.uniform(5.0, 15.0)), (0.0, back_y, seat_z + 0.08))
    for x in (-length / 2.0 + 0.12, length / 2.0 - 0.12):
        mesh += box((0.07, depth, seat_z), (x, 0.0, seat_z / 2.0), metal)
        mesh += box((0.06, 0.06, back_h + 0.08), (x, back_y, seat_z + (back_h + 0.08) / 2.0), metal)
    return mesh


def street_lamp(rng: np.random.Generator) -> Mesh:
    mast_h, mast_r = rng.uniform(3.5, 5.5), rng.uniform(0.06, 0.1)
    metal, glow = dull_color(rng, (0.2, 0.6)), any_color(rng)
    mesh = frustum(mast_r * 2.2, mast_r * 2.0, 0.0, rng.uniform(0.3, 0.7), 6, metal)
    mesh += frustum(mast_r, mast_r * 0.8, 0.0, mast_h, 6, metal)
    if rng.random() < 0.65:
        # An arm reaching over the street, the lantern hanging at its end.
        reach = rng.uniform(0.7, 1.6)
        mesh += box((reach, 0.07, 0.07), (reach / 2.0, 0.0, mast_h - 0.05), metal)
        size = rng.uniform(0.4, 0.7)
        # Lit from below: the bottom face glows, the rest is the housing.
        head = tapered_box(
            (size, size * 0.5),
            (size * 0.8, size * 0.35),
            mast_h - 0.2,
            mast_h,
            [glow, *[metal] * 5],
        )
        mesh += transformed(head, np.eye(3), (reach, 0.0, 0.0))
    else:
        # A lantern on top of the mast.
        lantern = rng.uniform(0.22, 0.4)
        mesh += frustum(lantern * 0.6, lantern, mast_h, mast_h + lantern * 1.3, 6, glow, metal)
        mesh += frustum(
            lantern * 1.1, 0.0, mast_h + lantern * 1.3, mast_h + lantern * 1.8, 6, metal
        )
    return mesh


BUILDERS: dict[str, Callable[[np.random.Generator], Mesh]] = {
    "car": car,
    "person": person,
    "tree": tree,
    "traffic_cone": traffic_cone,
    "bench": bench,
    "street_lamp": street_lamp,
}
assert tuple(BUILDERS) == CLASSES


def build(label: int, rng: np.random.Generator) -> Mesh:
    """A random instance of class ``CLASSES[label]`` in its own frame."""
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label must be in [0, {len(CLASSES)}), got {label}")
    return BUILDERS[CLASSES[label]](rng)


def clutter(rng: np.random.Generator) -> Mesh:
    """Street clutter that belongs to no class (bins, crates, bollards, kerb stones), so a
    distractor never competes with the main object for the label."""
    kind = int(rng.integers(4))
    color = any_color(rng)
    if kind == 0:
        radius = rng.uniform(0.25, 0.4)
        return frustum(radius, radius * 1.1, 0.0, rng.uniform(0.7, 1.1), 8, color)
    if kind == 1:
        size = rng.uniform(0.4, 1.0)
        return box((size, size * rng.uniform(0.6, 1.0), size * 0.7), (0.0, 0.0, size * 0.35), color)
    if kind == 2:
        radius = rng.uniform(0.08, 0.14)
        return frustum(radius, radius, 0.0, rng.uniform(0.5, 1.0), 6, color)
    length = rng.uniform(1.5, 3.0)
    return box((length, 0.2, 0.15), (0.0, 0.0, 0.075), color)
