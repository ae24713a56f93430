"""Chunk streams in and out of the model store: weights down to boards, updates and models up.

A transfer is announced by a header (format, total length, SHA-256) and then arrives as chunks
in order. Nothing is acknowledged before the whole has been hashed, checked against the header
and stored: a gap, an overlap, a short or long transfer and a wrong digest all end in
``CHECKSUM_MISMATCH`` and leave nothing behind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from safetensors import SafetensorError, safe_open

from orchestrator import rounds
from orchestrator.errors import ErrorCode, FleetError
from orchestrator.state import FleetState
from orchestrator.storage.model_store import DigestMismatch
from orchestrator.storage.records import ModelVersionRecord
from protos.transfer import MAX_CHUNK_BYTES, SAFETENSORS

_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BlobHeader:
    format: str
    total_bytes: int
    sha256_hex: str


@dataclass(frozen=True)
class OutgoingBlob:
    header: BlobHeader
    chunks: Iterator[bytes]


def receive_blob(
    state: FleetState,
    header: BlobHeader,
    chunks: Iterable[tuple[int, bytes]],
    *,
    max_bytes: int,
    kind: str,
) -> str:
    """Store the chunks ``(offset, data)`` announced by ``header``; return their digest."""
    if header.format != SAFETENSORS:
        raise FleetError(
            ErrorCode.BAD_FORMAT, f"format {header.format!r}: only safetensors", "blob.format"
        )
    if not _DIGEST.fullmatch(header.sha256_hex):
        raise FleetError(
            ErrorCode.INVALID_REQUEST,
            "sha256_hex must be 64 lowercase hex digits",
            "blob.sha256_hex",
        )
    if header.total_bytes > max_bytes:
        raise FleetError(
            ErrorCode.TOO_LARGE,
            f"{header.total_bytes} bytes announced, at most {max_bytes} accepted",
            "blob.total_bytes",
        )
    counter = state.metrics.bytes_received.labels(kind)

    def checked() -> Iterator[bytes]:
        expected = 0
        for offset, data in chunks:
            if offset != expected:
                raise FleetError(
                    ErrorCode.CHECKSUM_MISMATCH,
                    f"chunk at offset {offset}, expected {expected} (a chunk was lost or repeated)",
                )
            if len(data) > MAX_CHUNK_BYTES:
                raise FleetError(
                    ErrorCode.TOO_LARGE, f"chunk of {len(data)} bytes, at most {MAX_CHUNK_BYTES}"
                )
            expected += len(data)
            if expected > header.total_bytes:
                raise FleetError(
                    ErrorCode.CHECKSUM_MISMATCH,
                    f"more than the {header.total_bytes} bytes announced arrived",
                )
            counter.inc(len(data))
            yield data
        if expected != header.total_bytes:
            raise FleetError(
                ErrorCode.CHECKSUM_MISMATCH,
                f"{expected} bytes arrived, {header.total_bytes} were announced",
            )

    try:
        digest = state.model_store.put(checked(), expected_digest=header.sha256_hex)
    except DigestMismatch as exc:
        raise FleetError(ErrorCode.CHECKSUM_MISMATCH, str(exc)) from None
    try:
        with safe_open(str(state.model_store.path(digest)), framework="numpy"):
            pass
    except (OSError, SafetensorError) as exc:
        raise FleetError(ErrorCode.BAD_FORMAT, f"not a readable safetensors file: {exc}") from None
    return digest


def send_blob(state: FleetState, digest: str, max_chunk_bytes: int, kind: str) -> OutgoingBlob:
    """The stored file ``digest`` as a header and chunks of at most ``max_chunk_bytes``."""
    chunk_bytes = min(max_chunk_bytes or state.config.chunk_bytes, state.config.chunk_bytes)
    header = BlobHeader(SAFETENSORS, state.model_store.size_bytes(digest), digest)
    counter = state.metrics.bytes_sent.labels(kind)

    def chunks() -> Iterator[bytes]:
        for chunk in state.model_store.iter_chunks(digest, chunk_bytes):
            counter.inc(len(chunk))
            yield chunk

    return OutgoingBlob(header, chunks())


def starting_model(state: FleetState, job_id: str, round_number: int) -> ModelVersionRecord:
    """``rounds.starting_model``, answered as ``UNKNOWN_MODEL`` when there is none."""
    try:
        return rounds.starting_model(state.storage, job_id, round_number)
    except rounds.NoModelYet as missing:
        raise FleetError(ErrorCode.UNKNOWN_MODEL, str(missing)) from None
