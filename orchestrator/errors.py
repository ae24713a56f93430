"""The coordinator's error catalog: each error code, its gRPC status and its public message.

Handlers raise ``FleetError(code, detail)``; the server's interceptor turns it into the catalog's
status with the public message (and the detail, which handlers write for the caller). Any other
exception becomes ``INTERNAL`` with a generic message and is logged in full, never sent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class _Entry:
    status: grpc.StatusCode
    message: str


class ErrorCode(enum.Enum):
    BAD_ENROLLMENT_TOKEN = _Entry(grpc.StatusCode.UNAUTHENTICATED, "enrollment token not accepted")
    BAD_NODE_CREDENTIAL = _Entry(grpc.StatusCode.UNAUTHENTICATED, "node credential not accepted")
    BAD_ADMIN_TOKEN = _Entry(grpc.StatusCode.PERMISSION_DENIED, "admin token not accepted")
    INVALID_REQUEST = _Entry(grpc.StatusCode.INVALID_ARGUMENT, "invalid request")
    INVALID_JOB = _Entry(grpc.StatusCode.INVALID_ARGUMENT, "invalid job")
    UNKNOWN_NODE = _Entry(grpc.StatusCode.NOT_FOUND, "no such node")
    UNKNOWN_JOB = _Entry(grpc.StatusCode.NOT_FOUND, "no such job")
    UNKNOWN_ROUND = _Entry(grpc.StatusCode.NOT_FOUND, "no such round")
    LATE_UPDATE = _Entry(
        grpc.StatusCode.FAILED_PRECONDITION, "update arrived after the round closed"
    )
    DUPLICATE_UPDATE = _Entry(grpc.StatusCode.ALREADY_EXISTS, "update already received")
    CHECKSUM_MISMATCH = _Entry(grpc.StatusCode.DATA_LOSS, "transfer checksum mismatch")
    REJECTED_UPDATE = _Entry(grpc.StatusCode.INVALID_ARGUMENT, "update rejected")
    JOB_NOT_CANCELLABLE = _Entry(grpc.StatusCode.FAILED_PRECONDITION, "job already finished")
    INTERNAL = _Entry(grpc.StatusCode.INTERNAL, "internal error")

    @property
    def status(self) -> grpc.StatusCode:
        return self.value.status

    @property
    def public_message(self) -> str:
        return self.value.message


class FleetError(Exception):
    """An error the caller may see: a catalog code and a detail written for the caller."""

    def __init__(self, code: ErrorCode, detail: str = "") -> None:
        super().__init__(f"{code.name}: {detail}" if detail else code.name)
        self.code = code
        self.detail = detail

    @property
    def status(self) -> grpc.StatusCode:
        return self.code.status

    @property
    def public_message(self) -> str:
        message = self.code.public_message
        return f"{message}: {self.detail}" if self.detail else message
