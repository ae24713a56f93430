"""How a board's task and a round end: the coordinator's vocabularies of endings.

Stored in events and metrics labels by value; on the wire they are ``fleet_pb2.FailureKind``
and ``jobs_pb2.RoundOutcome``, converted by name in one place (``protos.vocabulary``).
"""

from __future__ import annotations

import enum


class FailureKind(enum.StrEnum):
    """Why a board's task failed, as the board reported it."""

    OUT_OF_MEMORY = "out_of_memory"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    DOWNLOAD_FAILED = "download_failed"
    INVALID_TASK = "invalid_task"
    NO_DATA = "no_data"
    INTERNAL = "internal"


class RoundOutcome(enum.StrEnum):
    """How a round closed."""

    QUORUM = "quorum"
    ALL_REPORTED = "all_reported"
    DEADLINE = "deadline"
    FAILED = "failed"
