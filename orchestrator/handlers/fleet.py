"""What the fleet service does for agents, independent of gRPC."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from orchestrator.config import CoordinatorConfig
from orchestrator.errors import ErrorCode, FleetError
from orchestrator.hardware_class import hardware_class
from orchestrator.storage import Storage
from orchestrator.storage.credentials import hash_credential, new_credential, verify_credential
from orchestrator.storage.records import Hardware, NewNode, NodeRecord, NodeStatus


@dataclass(frozen=True)
class FleetState:
    """What the handlers work on: the registry and the configuration."""

    storage: Storage
    config: CoordinatorConfig


@dataclass(frozen=True)
class Registration:
    node_id: str
    credential: str
    hardware_class: str


def register(
    state: FleetState, enrollment_token: str, node_name: str, hardware: Hardware
) -> Registration:
    """Enroll a board: a new node id and the credential it presents from now on."""
    if not hmac.compare_digest(enrollment_token, state.config.enrollment_token):
        raise FleetError(ErrorCode.BAD_ENROLLMENT_TOKEN)
    credential = new_credential()
    board_class = hardware_class(hardware)
    node = state.storage.create_node(
        NewNode(
            name=node_name,
            hardware_class=board_class,
            credential_hash=hash_credential(credential),
            hardware=hardware,
        )
    )
    return Registration(node_id=node.id, credential=credential, hardware_class=board_class)


def authenticate(state: FleetState, node_id: str, credential: str) -> NodeRecord:
    """The node ``node_id`` if ``credential`` is its credential; ``FleetError`` otherwise."""
    if not node_id:
        raise FleetError(ErrorCode.INVALID_REQUEST, "node_id is required")
    node = state.storage.get_node(node_id)
    # One answer for an unknown node and a wrong credential: no probing for node ids.
    if node is None or not verify_credential(credential, node.credential_hash):
        raise FleetError(ErrorCode.BAD_NODE_CREDENTIAL)
    if node.status is not NodeStatus.ACTIVE:
        raise FleetError(ErrorCode.BAD_NODE_CREDENTIAL, "this node is disabled")
    return node


def heartbeat(state: FleetState, node_id: str, credential: str) -> float:
    """Record that the node is alive; return when it should beat next (seconds)."""
    node = authenticate(state, node_id, credential)
    state.storage.touch_node(node.id)
    return state.config.heartbeat_timeout_s / 3
