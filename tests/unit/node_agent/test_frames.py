"""Loading a board's frames: what a camera folder may hold, good and bad."""

from __future__ import annotations

import io
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from node_agent.frames import FramesError, load_frames


def _image(seed: int, width: int = 16, height: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path)


def _bomb_png(path: Path) -> None:
    """A valid PNG whose header (with a correct checksum) claims 20000×20000 pixels."""
    encoded = io.BytesIO()
    Image.fromarray(_image(0, 8, 8)).save(encoded, format="PNG")
    data = bytearray(encoded.getvalue())
    header = bytearray(data[12:29])
    header[4:12] = struct.pack(">II", 20000, 20000)
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(header)))
    path.write_bytes(bytes(data))


def test_frames_load_in_name_order_as_uint8_channels_first(tmp_path: Path) -> None:
    _write_png(tmp_path / "b.png", _image(2))
    _write_png(tmp_path / "a.png", _image(1))
    Image.fromarray(_image(3)).save(tmp_path / "c.jpeg", quality=95)

    frames = load_frames(tmp_path, 16)

    assert frames.images.shape == (3, 3, 16, 16) and frames.images.dtype == torch.uint8
    assert [p.name for p in frames.files] == ["a.png", "b.png", "c.jpeg"]
    np.testing.assert_array_equal(frames.images[0].permute(1, 2, 0).numpy(), _image(1))
    np.testing.assert_array_equal(frames.images[1].permute(1, 2, 0).numpy(), _image(2))
    assert frames.skipped == []


def test_corrupt_files_are_skipped_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_png(tmp_path / "000.png", _image(0))
    _write_png(tmp_path / "001.png", _image(1))
    whole = (tmp_path / "001.png").read_bytes()
    (tmp_path / "001.png").write_bytes(whole[: len(whole) // 2])  # cut short mid-write
    (tmp_path / "002.jpg").write_bytes(b"not an image at all")
    (tmp_path / "003.png").write_bytes(b"")
    _bomb_png(tmp_path / "004.png")
    _write_png(tmp_path / "005.png", _image(5))

    with caplog.at_level(logging.WARNING, logger="node_agent.frames"):
        frames = load_frames(tmp_path, 16)

    assert [p.name for p in frames.files] == ["000.png", "005.png"]
    assert frames.images.shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(frames.images[1].permute(1, 2, 0).numpy(), _image(5))
    assert [p.name for p, _ in frames.skipped] == ["001.png", "002.jpg", "003.png", "004.png"]
    assert all(reason for _, reason in frames.skipped)
    assert "exceed" in dict((p.name, r) for p, r in frames.skipped)["004.png"]
    logged = caplog.text
    assert all(name in logged for name in ("001.png", "002.jpg", "003.png", "004.png"))
    assert "4 of 6 frames" in logged


def test_other_sizes_are_centre_cropped_and_resized(tmp_path: Path) -> None:
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, 10:30] = 200  # the centred square is all 200, the sides black
    _write_png(tmp_path / "wide.png", wide)
    Image.fromarray(_image(3, 32, 32)).convert("L").save(tmp_path / "grey.png")

    frames = load_frames(tmp_path, 10)

    assert frames.images.shape == (2, 3, 10, 10)
    assert (frames.images[1] == 200).all()
    assert torch.equal(frames.images[0, 0], frames.images[0, 2])  # grey became RGB


def test_files_that_are_not_frames_are_ignored(tmp_path: Path) -> None:
    _write_png(tmp_path / "000.png", _image(0))
    (tmp_path / "labels.csv").write_text("file,label,class\n")

    frames = load_frames(tmp_path, 16)

    assert len(frames.images) == 1 and frames.skipped == []


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no frames here")

    with pytest.raises(FramesError, match="no frames in"):
        load_frames(tmp_path, 16)


def test_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FramesError, match="no frames folder"):
        load_frames(tmp_path / "absent", 16)


def test_a_folder_of_only_corrupt_frames_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"\x89PNG broken")

    with pytest.raises(FramesError, match="1 skipped"):
        load_frames(tmp_path, 16)
