"""What the servicers share: records to protocol messages and back, and call metadata."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from orchestrator.errors import ErrorCode, FleetError
from orchestrator.handlers.transfers import BlobHeader, OutgoingBlob
from orchestrator.planning import StoredPlan
from orchestrator.storage.records import Hardware
from protos.edgefleet.v1 import common_pb2, fleet_pb2


def hardware_from_proto(message: common_pb2.Hardware) -> Hardware:
    try:
        return Hardware(
            ram_bytes=message.ram_bytes,
            num_cores=message.num_cores,
            cpu_model=message.cpu_model,
            arch=message.arch,
            accelerator=message.accelerator or None,
            torch_version=message.torch_version,
            runtime_baseline_bytes=message.runtime_baseline_bytes,
            memory_budget_bytes=message.memory_budget_bytes,
            accelerator_memory_bytes=message.accelerator_memory_bytes,
        )
    except ValueError as exc:
        raise FleetError(ErrorCode.INVALID_REQUEST, f"hardware: {exc}", "hardware") from None


def hardware_to_proto(hardware: Hardware) -> common_pb2.Hardware:
    return common_pb2.Hardware(
        ram_bytes=hardware.ram_bytes,
        memory_budget_bytes=hardware.memory_budget_bytes,
        num_cores=hardware.num_cores,
        cpu_model=hardware.cpu_model,
        arch=hardware.arch,
        accelerator=hardware.accelerator or "",
        accelerator_memory_bytes=hardware.accelerator_memory_bytes,
        torch_version=hardware.torch_version,
        runtime_baseline_bytes=hardware.runtime_baseline_bytes,
    )


def plan_to_proto(plan: StoredPlan, predicted_peak_bytes: int | None = None) -> common_pb2.Plan:
    """A stored plan as the protocol's ``Plan`` (``predicted_peak_bytes``: the assignment's,
    where it was recorded with the round)."""
    return common_pb2.Plan(
        batch_size=plan.batch_size,
        accumulation_steps=plan.accumulation_steps,
        strategy=plan.strategy,
        schedule=list(plan.sequence),
        budget_bytes=plan.budget_bytes,
        predicted_peak_bytes=(
            predicted_peak_bytes if predicted_peak_bytes is not None else plan.predicted_peak_bytes
        ),
        time_overhead=plan.time_overhead,
        throughput_samples_per_s=plan.throughput,
        store_all_max_batch_size=plan.store_all_max_batch,
        notes=list(plan.notes),
    )


def blob_header_from_proto(message: common_pb2.BlobInfo) -> BlobHeader:
    return BlobHeader(message.format, message.total_bytes, message.sha256_hex)


def blob_info(blob: OutgoingBlob) -> common_pb2.BlobInfo:
    header = blob.header
    return common_pb2.BlobInfo(
        format=header.format, total_bytes=header.total_bytes, sha256_hex=header.sha256_hex
    )


class _ChunkMessage(Protocol):
    def HasField(self, field_name: Any) -> bool: ...

    @property
    def chunk(self) -> common_pb2.Chunk: ...


def chunks_from(messages: Iterator[_ChunkMessage]) -> Iterator[tuple[int, bytes]]:
    """``(offset, data)`` of each chunk after a stream's header; a second header is refused."""
    for message in messages:
        if not message.HasField("chunk"):
            raise FleetError(ErrorCode.INVALID_REQUEST, "only the first message is a header")
        yield message.chunk.offset_bytes, message.chunk.data


def weights_stream(
    job_id: str, round_number: int, blob: OutgoingBlob
) -> Iterator[fleet_pb2.DownloadWeightsResponse]:
    """A stored file as a download stream: its header, then its chunks with their offsets."""
    yield fleet_pb2.DownloadWeightsResponse(
        header=fleet_pb2.WeightsHeader(job_id=job_id, round=round_number, blob=blob_info(blob))
    )
    offset = 0
    for data in blob.chunks:
        yield fleet_pb2.DownloadWeightsResponse(
            chunk=common_pb2.Chunk(offset_bytes=offset, data=data)
        )
        offset += len(data)
