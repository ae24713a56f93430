"""Frame sets: rendering them in memory, writing them as PNG files, reading labelled ones back.

Train and evaluation frames are disjoint by construction: frame ``i`` of a set with seed ``s``
and split ``k`` is drawn from ``numpy.random.default_rng([k, s, i])``, the split code being the
first seed word, so no training frame (``Split.TRAIN``) of any set or viewpoint can share its
generator with an evaluation frame (``Split.EVAL``), whatever seeds the callers choose.

On disk a set is a directory of ``000000.png, 000001.png, ...`` plus ``frames.json`` (how it was
made) and, for a labelled set, ``labels.csv`` (``file,label,class``: the file name, the label's
index in ``CLASSES`` and its name).
"""

from __future__ import annotations

import csv
import itertools
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np
from PIL import Image

from viewpoint.objects import CLASSES
from viewpoint.raster import render
from viewpoint.scene import sample_scene, scene_rng
from viewpoint.viewpoints import AnyViewpoint

DEFAULT_IMAGE_SIZE = 64
LABELS_FILE = "labels.csv"
MANIFEST_FILE = "frames.json"


class Split(IntEnum):
    TRAIN = 0
    EVAL = 1


class FrameSetError(ValueError):
    """A frame set on disk that is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class LabelledFrames:
    images: np.ndarray
    """``(N, S, S, 3)`` uint8 RGB, in file order."""
    labels: np.ndarray
    """``(N,)`` int64 indices into ``CLASSES``."""
    files: tuple[str, ...]


def _render_range(
    viewpoint: AnyViewpoint, seed: int, split: Split, image_size: int, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((stop - start, image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty(stop - start, dtype=np.int64)
    for offset, index in enumerate(range(start, stop)):
        scene = sample_scene(viewpoint, scene_rng(seed, int(split), index), image_size)
        images[offset] = render(scene)
        labels[offset] = scene.label
    return images, labels


def render_frames(
    viewpoint: AnyViewpoint,
    count: int,
    seed: int,
    split: Split,
    image_size: int = DEFAULT_IMAGE_SIZE,
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(N, S, S, 3)`` uint8 and labels ``(N,)``; the same for any number of workers,
    since every frame's scene depends only on its own seed words."""
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1 or count < 2 * workers:
        return _render_range(viewpoint, seed, split, image_size, 0, count)
    bounds = [int(b) for b in np.linspace(0, count, workers + 1)]
    ranges = list(itertools.pairwise(bounds))
    with ProcessPoolExecutor(workers) as pool:
        futures = [
            pool.submit(_render_range, viewpoint, seed, split, image_size, lo, hi)
            for lo, hi in ranges
        ]
        parts = [future.result() for future in futures]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def frame_name(index: int) -> str:
    return f"{index:06d}.png"


def write_frames(
    directory: Path | str,
    viewpoint: AnyViewpoint,
    count: int,
    seed: int,
    labelled: bool,
    split: Split | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    workers: int = 1,
) -> Path:
    """Render ``count`` frames into ``directory`` (created if needed) and return it.

    ``split`` defaults to ``EVAL`` for a labelled set and ``TRAIN`` for an unlabelled one: a
    board's labelled frames exist only to measure it, its unlabelled ones only to learn from."""
    chosen = (Split.EVAL if labelled else Split.TRAIN) if split is None else split
    images, labels = render_frames(viewpoint, count, seed, chosen, image_size, workers)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    names = [frame_name(i) for i in range(count)]
    for name, image in zip(names, images, strict=True):
        # Level 1: a third of the time of the default for a few percent more bytes.
        Image.fromarray(image).save(folder / name, compress_level=1)
    if labelled:
        with (folder / LABELS_FILE).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "label", "class"])
            for name, label in zip(names, labels.tolist(), strict=True):
                writer.writerow([name, label, CLASSES[label]])
    manifest = {
        "viewpoint": viewpoint.name,
        "count": count,
        "seed": seed,
        "split": chosen.name.lower(),
        "image_size": image_size,
        "labelled": labelled,
        "classes": list(CLASSES),
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def read_labels(directory: Path | str) -> dict[str, int]:
    """File name -> label index, from a labelled set's ``labels.csv``."""
    path = Path(directory) / LABELS_FILE
    if not path.is_file():
        raise FrameSetError(f"{path} not found: {directory} is not a labelled frame set")
    labels: dict[str, int] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != ["file", "label", "class"]:
            raise FrameSetError(
                f"{path}: expected columns file,label,class, got {reader.fieldnames}"
            )
        for row in reader:
            label = int(row["label"])
            if not 0 <= label < len(CLASSES) or CLASSES[label] != row["class"]:
                raise FrameSetError(
                    f"{path}: {row['file']} has label {label} named {row['class']!r}, "
                    f"but the classes are {', '.join(CLASSES)}"
                )
            labels[row["file"]] = label
    return labels


def read_labelled(directory: Path | str) -> LabelledFrames:
    """A labelled set's frames and labels, in file-name order."""
    folder = Path(directory)
    labels = read_labels(folder)
    files = tuple(sorted(labels))
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise FrameSetError(f"{folder}: {len(missing)} labelled files missing, e.g. {missing[0]}")
    images = np.stack([np.asarray(Image.open(folder / name).convert("RGB")) for name in files])
    return LabelledFrames(images, np.array([labels[name] for name in files], np.int64), files)
