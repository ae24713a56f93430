"""Safetensors files read tensor by tensor with positioned reads, never memory-mapped: a mapped
file's pages stay resident in the coordinator for as long as the mapping lives, and a round
holds a hundred updates. Also where a tensor file is written (atomically) and its layout kept."""

from __future__ import annotations

import functools
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from safetensors.numpy import save_file

Layout = dict[str, tuple[tuple[int, ...], str]]
"""Tensor name -> (shape, safetensors dtype name)."""

_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER_BYTES = 100 << 20
"""The safetensors format's own limit on the JSON header."""


@dataclass(frozen=True)
class _Entry:
    shape: tuple[int, ...]
    dtype: str
    start: int
    """Absolute offset of the tensor's bytes in the file."""


class TensorFile:
    """A safetensors file read tensor by tensor (or rows of one) with ``os.pread``.

    The header is parsed and checked on opening (every tensor's byte range lies in the file and
    matches its shape and dtype); a malformed file raises ``ValueError``.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self._entries = self._parse(os.fstat(self._fd).st_size)
        except BaseException:
            os.close(self._fd)
            raise

    def _parse(self, file_bytes: int) -> dict[str, _Entry]:
        prefix = os.pread(self._fd, 8, 0)
        if len(prefix) != 8:
            raise ValueError("shorter than a safetensors header")
        (header_bytes,) = struct.unpack("<Q", prefix)
        if header_bytes > min(_MAX_HEADER_BYTES, file_bytes - 8):
            raise ValueError(f"header of {header_bytes} bytes does not fit the file")
        try:
            header = json.loads(os.pread(self._fd, header_bytes, 8))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"header is not JSON: {exc}") from None
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        base = 8 + header_bytes
        entries: dict[str, _Entry] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = _DTYPES[info["dtype"]]
                shape = tuple(int(size) for size in info["shape"])
                begin, end = (int(offset) for offset in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"tensor {name!r}: unreadable or unsupported entry") from None
            if min(shape, default=0) < 0 or end - begin != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"tensor {name!r}: byte range does not match its shape")
            if begin < 0 or base + end > file_bytes:
                raise ValueError(f"tensor {name!r}: bytes beyond the end of the file")
            entries[name] = _Entry(shape, str(info["dtype"]), base + begin)
        return entries

    @property
    def layout(self) -> Layout:
        return {name: (entry.shape, entry.dtype) for name, entry in self._entries.items()}

    def read(
        self, name: str, rows: tuple[int, int] | None = None, *, into: np.ndarray | None = None
    ) -> np.ndarray:
        """Tensor ``name``, or its rows ``[first, stop)`` along the first dimension.

        ``into``: a byte buffer (uint8) to read into and return a view of, when large enough.
        """
        entry = self._entries[name]
        dtype = _DTYPES[entry.dtype]
        shape = entry.shape
        offset = entry.start
        if rows is not None and shape:
            first, stop = rows
            row_bytes = math.prod(shape[1:]) * dtype.itemsize
            offset += first * row_bytes
            shape = (stop - first, *shape[1:])
        size = math.prod(shape) * dtype.itemsize
        if into is not None and into.size >= size:
            buffer = into[:size]
        else:
            buffer = np.empty(size, dtype=np.uint8)
        done = 0
        while done < buffer.size:
            got = os.preadv(self._fd, [buffer[done:].data], offset + done)
            if got == 0:
                raise ValueError(f"tensor {name!r}: the file ended early")
            done += got
        return buffer.view(dtype).reshape(shape)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> TensorFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@functools.lru_cache(maxsize=32)
def _cached_layout(path: str, modified_ns: int, size: int) -> Layout:
    with TensorFile(Path(path)) as reader:
        return reader.layout


def model_layout(path: Path) -> Layout:
    """The layout of the model at ``path``, read once per file version.

    Every update of a round is checked against the same global model; re-reading its header
    for each of a hundred uploads was measurable. Stored models are content-addressed and never
    change; the key still carries mtime and size so a rewritten file is read again.
    """
    status = path.stat()
    return _cached_layout(str(path), status.st_mtime_ns, status.st_size)


def save_tensors(tensors: dict[str, np.ndarray], out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    save_file(tensors, str(partial))
    partial.replace(out_path)
