"""A content-addressed store of tensor files (safetensors bytes), on disk, named by SHA-256.

Weights and updates are too large for SQL rows; the registry keeps their digests and this store
keeps the bytes under ``objects/<first two hex digits>/<digest>`` (sharded so no folder holds
every file). A file appears under its name only once it is complete: it is written to ``tmp/``,
flushed to disk and renamed, and a rename within one file system is atomic, so a reader (or a
coordinator restarted after a crash) never sees part of a file. Stored files are read-only:
content-addressed bytes never change.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from protos.transfer import DEFAULT_CHUNK_BYTES

_DIGEST = re.compile(r"[0-9a-f]{64}")
_SHARD_CHARS = 2
_READ_ONLY_MODE = 0o444


class ModelStoreError(Exception):
    """Any error of the model store that a caller is expected to handle."""


class BlobNotFound(ModelStoreError):
    """No file with that digest is stored."""


class DigestMismatch(ModelStoreError):
    """The bytes do not hash to the digest they were announced (or stored) with."""


class ModelStore:
    """Files under ``root``; ``fsync`` off trades durability on power loss for speed (tests)."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self._objects = root / "objects"
        self._tmp = root / "tmp"
        self._fsync = fsync
        self._objects.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes | Iterable[bytes], *, expected_digest: str | None = None) -> str:
        """Store ``data`` (bytes, or chunks of them) and return its SHA-256 digest (hex).

        With ``expected_digest``, bytes that hash to anything else raise ``DigestMismatch`` and
        leave nothing behind (an upload corrupted on the way).
        """
        if expected_digest is not None:
            _check_digest(expected_digest)
        chunks: Iterable[bytes] = (data,) if isinstance(data, bytes | bytearray) else data
        descriptor, temp_name = tempfile.mkstemp(dir=self._tmp, suffix=".part")
        temp_path = Path(temp_name)
        try:
            hasher = hashlib.sha256()
            with os.fdopen(descriptor, "wb") as temp_file:
                for chunk in chunks:
                    hasher.update(chunk)
                    temp_file.write(chunk)
                temp_file.flush()
                if self._fsync:
                    os.fsync(temp_file.fileno())
            digest = hasher.hexdigest()
            if expected_digest is not None and digest != expected_digest:
                raise DigestMismatch(f"received bytes hash to {digest}, not {expected_digest}")
            target = self._path(digest)
            if target.exists():
                # Same digest, same bytes: the stored file stands.
                temp_path.unlink()
                return digest
            target.parent.mkdir(exist_ok=True)
            os.chmod(temp_path, _READ_ONLY_MODE)
            os.replace(temp_path, target)
            if self._fsync:
                _fsync_dir(target.parent)
            return digest
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp_path.unlink()
            raise

    def exists(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def path(self, digest: str) -> Path:
        """Where the file lies (for readers such as ``safetensors.safe_open`` that want a path)."""
        path = self._path(digest)
        if not path.is_file():
            raise BlobNotFound(f"no stored file {digest}")
        return path

    def open(self, digest: str) -> BinaryIO:
        """The stored file, open for binary reading (the caller closes it)."""
        try:
            return self._path(digest).open("rb")
        except FileNotFoundError as error:
            raise BlobNotFound(f"no stored file {digest}") from error

    def get(self, digest: str) -> bytes:
        with self.open(digest) as stored:
            return stored.read()

    def size_bytes(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def iter_chunks(self, digest: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
        """The file in chunks of at most ``chunk_bytes`` (for streaming it over gRPC)."""
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be > 0, got {chunk_bytes}")
        with self.open(digest) as stored:
            while chunk := stored.read(chunk_bytes):
                yield chunk

    def verify(self, digest: str) -> bool:
        """Whether the stored file still hashes to its name (``BlobNotFound`` if it is absent)."""
        hasher = hashlib.sha256()
        for chunk in self.iter_chunks(digest):
            hasher.update(chunk)
        return hasher.hexdigest() == digest

    def _path(self, digest: str) -> Path:
        _check_digest(digest)
        return self._objects / digest[:_SHARD_CHARS] / digest


def _check_digest(digest: str) -> None:
    # Also keeps a caller's string from naming a path outside the store.
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a SHA-256 hex digest: {digest!r}")


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
