"""FleetService: the agents' side of the protocol."""

from __future__ import annotations

import grpc

from orchestrator.errors import ErrorCode, FleetError
from orchestrator.handlers import fleet
from orchestrator.servicers.convert import bearer_token, hardware_from_proto
from protos.edgefleet.v1 import fleet_pb2, fleet_pb2_grpc


class FleetServicer(fleet_pb2_grpc.FleetServiceServicer):
    """Method names are the protocol's (CamelCase), as the generated base class requires."""

    def __init__(self, state: fleet.FleetState) -> None:
        self._state = state

    def Register(
        self, request: fleet_pb2.RegisterRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.RegisterResponse:
        if not request.HasField("hardware"):
            raise FleetError(ErrorCode.INVALID_REQUEST, "hardware is required")
        registration = fleet.register(
            self._state,
            request.enrollment_token,
            request.node_name or "board",
            hardware_from_proto(request.hardware),
        )
        return fleet_pb2.RegisterResponse(
            node_id=registration.node_id,
            node_credential=registration.credential,
            hardware_class=registration.hardware_class,
            heartbeat_interval_s=self._state.config.heartbeat_timeout_s / 3,
            max_chunk_bytes=self._state.config.chunk_bytes,
        )

    def Heartbeat(
        self, request: fleet_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.HeartbeatResponse:
        next_s = fleet.heartbeat(
            self._state,
            request.node_id,
            bearer_token(context, ErrorCode.BAD_NODE_CREDENTIAL, "credential"),
        )
        return fleet_pb2.HeartbeatResponse(next_heartbeat_s=next_s)
