"""A procedural world seen from many viewpoints: object classes, scenes, a camera, a renderer and
frame sets (numpy and Pillow only; see ``docs/viewpoint.md``)."""

from viewpoint.camera import Camera
from viewpoint.dataset import (
    DEFAULT_IMAGE_SIZE,
    LABELS_FILE,
    FrameSetError,
    LabelledFrames,
    Split,
    read_labelled,
    render_frames,
    write_frames,
)
from viewpoint.objects import CLASSES
from viewpoint.raster import render
from viewpoint.scene import Scene, sample_scene, scene_rng
from viewpoint.viewpoints import (
    BROAD,
    EYE_LEVEL,
    NAMED,
    POLES,
    Viewpoint,
    ViewpointMixture,
    by_name,
)

__all__ = [
    "BROAD",
    "CLASSES",
    "DEFAULT_IMAGE_SIZE",
    "EYE_LEVEL",
    "LABELS_FILE",
    "NAMED",
    "POLES",
    "Camera",
    "FrameSetError",
    "LabelledFrames",
    "Scene",
    "Split",
    "Viewpoint",
    "ViewpointMixture",
    "by_name",
    "read_labelled",
    "render",
    "render_frames",
    "sample_scene",
    "scene_rng",
    "write_frames",
]
