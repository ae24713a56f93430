"""The board's own frames: every JPEG or PNG of a folder, as one uint8 tensor N×3×S×S.

A camera board's folder holds whatever the camera wrote: a file cut short, one that is not an
image at all, or one whose header claims a size no board could decode is skipped, counted and
logged, never fatal. Other files (a ``labels.csv``, a manifest) are not frames and are ignored.
Frames of another size are centre-cropped to a square (the models learned undistorted shapes)
and resized (bilinear) to the side the task asks for.

The tensor is allocated once for every candidate file and filled in place: decoding into a list
and stacking it would hold the frames twice, and a board's memory cap counts that peak.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

_LOG = logging.getLogger(__name__)
SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_FRAME_PIXELS = 4096 * 4096
"""Larger frames are skipped before decoding: a corrupt header can claim any size, and no board
camera writes more (decoding such a frame would take hundreds of megabytes)."""
# What Pillow's decoders raise on a bad file: OSError (truncated or unidentified data),
# SyntaxError and ValueError (malformed chunks and headers), EOFError, and DecompressionBombError,
# which is none of these.
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class FramesError(ValueError):
    """No usable frames: the folder is missing, or holds no readable image."""


@dataclass(frozen=True)
class Frames:
    images: torch.Tensor
    """uint8, N×3×S×S, in file-name order."""
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """Files that could not be read, with why."""
    files: list[Path] = field(default_factory=list)
    """The files of ``images``, in order."""


class _TooLarge(ValueError):
    pass


def _read(path: Path, image_size: int) -> np.ndarray:
    """The frame as ``S×S×3`` uint8."""
    with Image.open(path) as image:
        width, height = image.size
        if width * height > MAX_FRAME_PIXELS:
            raise _TooLarge(f"{width}x{height} pixels exceed the limit of {MAX_FRAME_PIXELS}")
        # A JPEG decodes straight to a reduced scale when that is still at least the target.
        image.draft("RGB", (image_size, image_size))
        rgb = image.convert("RGB")
    side = min(rgb.size)
    if rgb.size != (side, side):
        left, top = (rgb.size[0] - side) // 2, (rgb.size[1] - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
    if side != image_size:
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def native_side(directory: Path | str) -> int | None:
    """The side of the first readable frame of ``directory`` once cropped square (what a task
    at the camera's own resolution asks for); None if the folder holds no readable frame."""
    folder = Path(directory)
    if not folder.is_dir():
        return None
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES):
        try:
            with Image.open(path) as image:
                width, height = image.size
        except _UNREADABLE:
            continue
        if 0 < width * height <= MAX_FRAME_PIXELS:
            return min(width, height)
    return None


def load_frames(directory: Path | str, image_size: int) -> Frames:
    """Every JPEG and PNG frame of ``directory`` (sorted by name) at ``image_size`` a side.

    ``FramesError`` if the folder is missing or no frame in it can be read."""
    folder = Path(directory)
    if image_size < 1:
        raise FramesError(f"image size must be positive, got {image_size}")
    if not folder.is_dir():
        raise FramesError(f"no frames folder {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if not paths:
        raise FramesError(f"no frames in {folder}: no file ends in {', '.join(SUFFIXES)}")
    images = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        try:
            frame = _read(path, image_size)
        except _UNREADABLE as exc:
            reason = f"{type(exc).__name__}: {exc}"
            skipped.append((path, reason))
            _LOG.warning("skipped frame %s: %s", path.name, reason)
            continue
        # Through numpy: Pillow's arrays are read-only, which torch.from_numpy warns about.
        images[len(files)].numpy()[...] = frame.transpose(2, 0, 1)
        files.append(path)
    if not files:
        raise FramesError(
            f"no readable frames in {folder} ({len(paths)} image files, {len(skipped)} skipped)"
        )
    if skipped:
        # Release the rows the skipped files left unused.
        images = images[: len(files)].clone()
        _LOG.warning("%d of %d frames in %s skipped", len(skipped), len(paths), folder)
    return Frames(images=images, skipped=skipped, files=files)
