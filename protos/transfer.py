"""Both ends of a chunk stream: split a file into protocol chunks, and put chunks back together.

The coordinator, the agents and the operators' commands move weights the same way: a header
(``BlobInfo``: format, length, SHA-256) and then ``Chunk``s in order. A receiver here checks every
offset, the total length and the digest before it returns any byte. This module is the protocol's
own, beside its stubs: every role imports it from here (one definition of the format, the chunk
sizes and the checks), and it imports nothing of theirs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from protos.edgefleet.v1 import common_pb2

SAFETENSORS = "safetensors"
"""The one tensor format the protocol carries (``BlobInfo.format``)."""
DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 4 << 20
"""gRPC's default message limit is 4 MiB; a chunk plus its envelope must stay under it."""


class TransferError(Exception):
    """Chunks that do not add up to what their header announced."""


def blob_info(data: bytes) -> common_pb2.BlobInfo:
    return common_pb2.BlobInfo(
        format=SAFETENSORS, total_bytes=len(data), sha256_hex=hashlib.sha256(data).hexdigest()
    )


def split(data: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[common_pb2.Chunk]:
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    view = memoryview(data)
    for offset in range(0, len(data), chunk_bytes):
        yield common_pb2.Chunk(offset_bytes=offset, data=bytes(view[offset : offset + chunk_bytes]))


def join(info: common_pb2.BlobInfo, chunks: Iterable[common_pb2.Chunk]) -> bytes:
    """The bytes the chunks carry, once they check out against ``info``."""
    if info.format != SAFETENSORS:
        raise TransferError(f"format {info.format!r}, expected {SAFETENSORS}")
    parts: list[bytes] = []
    received = 0
    hasher = hashlib.sha256()
    for chunk in chunks:
        if chunk.offset_bytes != received:
            raise TransferError(f"chunk at offset {chunk.offset_bytes}, expected {received}")
        received += len(chunk.data)
        if received > info.total_bytes:
            raise TransferError(f"more than the {info.total_bytes} bytes announced")
        hasher.update(chunk.data)
        parts.append(chunk.data)
    if received != info.total_bytes:
        raise TransferError(f"{received} bytes received, {info.total_bytes} announced")
    if hasher.hexdigest() != info.sha256_hex:
        raise TransferError(f"SHA-256 {hasher.hexdigest()} differs from {info.sha256_hex}")
    return b"".join(parts)
