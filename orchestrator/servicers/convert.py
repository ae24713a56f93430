"""What the servicers share: records to protocol messages and back, and call metadata."""

from __future__ import annotations

import grpc

from orchestrator.errors import ErrorCode, FleetError
from orchestrator.storage.records import Hardware
from protos.edgefleet.v1 import common_pb2


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
        )
    except ValueError as exc:
        raise FleetError(ErrorCode.INVALID_REQUEST, f"hardware: {exc}") from None


def hardware_to_proto(hardware: Hardware) -> common_pb2.Hardware:
    return common_pb2.Hardware(
        ram_bytes=hardware.ram_bytes,
        num_cores=hardware.num_cores,
        cpu_model=hardware.cpu_model,
        arch=hardware.arch,
        accelerator=hardware.accelerator or "",
        torch_version=hardware.torch_version,
        runtime_baseline_bytes=hardware.runtime_baseline_bytes,
    )


_BEARER = "bearer "


def bearer_token(context: grpc.ServicerContext, missing: ErrorCode, what: str) -> str:
    """The call's ``authorization: Bearer <token>`` token; else ``FleetError(missing)``."""
    for key, value in context.invocation_metadata():
        if key == "authorization" and isinstance(value, str) and value.lower().startswith(_BEARER):
            return value[len(_BEARER) :]
    raise FleetError(missing, f"send 'authorization: Bearer <{what}>'")
