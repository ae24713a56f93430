"""What the fleet service does for agents, independent of gRPC."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from orchestrator.errors import ErrorCode, FleetError
from orchestrator.hardware_class import hardware_class as derive_hardware_class
from orchestrator.state import FleetState
from orchestrator.storage.credentials import hash_credential, new_credential, verify_credential
from orchestrator.storage.records import (
    AssignmentStatus,
    Hardware,
    JobStatus,
    NewNode,
    NodeRecord,
    NodeStatus,
)

_CLASS_NAME = re.compile(r"[A-Za-z0-9._/-]{1,100}")


@dataclass(frozen=True)
class Registration:
    node_id: str
    credential: str
    hardware_class: str


def register(
    state: FleetState,
    enrollment_token: str,
    node_name: str,
    hardware: Hardware,
    *,
    agent_version: str = "",
    hardware_class: str = "",
) -> Registration:
    """Enroll a board: a new node id and the credential it presents from now on.

    ``hardware_class`` is the operator's name for the board's kind; empty derives one from the
    hardware.
    """
    if not hmac.compare_digest(enrollment_token, state.config.enrollment_token):
        raise FleetError(ErrorCode.BAD_ENROLLMENT_TOKEN)
    if hardware_class and not _CLASS_NAME.fullmatch(hardware_class):
        raise FleetError(
            ErrorCode.INVALID_REQUEST,
            "letters, digits and ._/- only, at most 100 characters",
            "hardware_class",
        )
    credential = new_credential()
    board_class = hardware_class or derive_hardware_class(hardware)
    node = state.storage.create_node(
        NewNode(
            name=node_name[:200],
            hardware_class=board_class,
            credential_hash=hash_credential(credential),
            hardware=hardware,
            agent_version=agent_version[:100],
        )
    )
    return Registration(node_id=node.id, credential=credential, hardware_class=board_class)


def authenticate(state: FleetState, node_id: str, credential: str) -> NodeRecord:
    """The node ``node_id`` if ``credential`` is its credential; ``FleetError`` otherwise."""
    if not node_id:
        raise FleetError(ErrorCode.INVALID_REQUEST, "node_id is required")
    cached = state.credentials.get(node_id, credential)
    if cached is not None:
        return cached
    node = state.storage.get_node(node_id)
    # One answer for an unknown node and a wrong credential: no probing for node ids.
    if node is None or not verify_credential(credential, node.credential_hash):
        raise FleetError(ErrorCode.BAD_NODE_CREDENTIAL)
    if node.status is not NodeStatus.ACTIVE:
        raise FleetError(ErrorCode.BAD_NODE_CREDENTIAL, "this node is disabled")
    state.credentials.put(credential, node)
    return node


@dataclass(frozen=True)
class Beat:
    next_heartbeat_s: float
    cancelled_job_ids: list[str]
    """Jobs of the node's unfinished train tasks that were cancelled: it should stop them."""


def heartbeat(
    state: FleetState,
    node_id: str,
    credential: str,
    *,
    current_task_id: str = "",
    rss_bytes: int = 0,
) -> Beat:
    """Record that the node is alive and what it does; say when to beat next."""
    node = authenticate(state, node_id, credential)
    state.seen.record(
        node.id,
        state.clock(),
        current_task_id=current_task_id[:64] or None,
        rss_bytes=rss_bytes or None,
    )
    cancelled = []
    if not state.idle_beats.is_idle(node.id):
        epoch = state.idle_beats.epoch()
        handed_out = state.storage.assignments_of_node(node.id, status=AssignmentStatus.SENT)
        for assignment in handed_out:
            round_ = state.storage.get_round(assignment.round_id)
            job = state.storage.get_job(round_.job_id) if round_ is not None else None
            if job is not None and job.status is JobStatus.CANCELLED:
                cancelled.append(job.id)
        if not handed_out:
            state.idle_beats.settle(node.id, epoch)
    return Beat(state.config.heartbeat_timeout_s / 3, sorted(set(cancelled)))
