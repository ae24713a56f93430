"""The coordinator's error catalog: each error code, its gRPC status, protocol code and message.

Handlers raise ``FleetError(code, detail)``; the server's interceptor turns it into the catalog's
status with the public message (and the detail, which handlers write for the caller), and sends
the protocol's ``ErrorDetail`` in the trailing metadata so clients act on the code rather than
parse messages. Any other exception becomes ``INTERNAL`` with a generic message and is logged in
full, never sent.

Update rejections are answers, not errors (``UploadUpdateResponse.rejection``); ``Rejection``
names them, with the protocol code each one travels as and the label it is counted under.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import grpc

from protos.edgefleet.v1 import common_pb2

ERROR_DETAIL_KEY = "edgefleet-error-detail-bin"


@dataclass(frozen=True)
class _Entry:
    status: grpc.StatusCode
    proto_code: int
    message: str


_C = common_pb2


class ErrorCode(enum.Enum):
    BAD_ENROLLMENT_TOKEN = _Entry(
        grpc.StatusCode.UNAUTHENTICATED,
        _C.ERROR_CODE_UNAUTHENTICATED,
        "enrollment token not accepted",
    )
    BAD_NODE_CREDENTIAL = _Entry(
        grpc.StatusCode.UNAUTHENTICATED,
        _C.ERROR_CODE_UNAUTHENTICATED,
        "node credential not accepted",
    )
    BAD_ADMIN_TOKEN = _Entry(
        grpc.StatusCode.PERMISSION_DENIED,
        _C.ERROR_CODE_PERMISSION_DENIED,
        "admin token not accepted",
    )
    INVALID_REQUEST = _Entry(
        grpc.StatusCode.INVALID_ARGUMENT, _C.ERROR_CODE_INVALID_ARGUMENT, "invalid request"
    )
    INVALID_JOB = _Entry(
        grpc.StatusCode.INVALID_ARGUMENT, _C.ERROR_CODE_INVALID_ARGUMENT, "invalid job"
    )
    BAD_FORMAT = _Entry(
        grpc.StatusCode.INVALID_ARGUMENT, _C.ERROR_CODE_BAD_FORMAT, "not a safetensors file"
    )
    UNKNOWN_NODE = _Entry(grpc.StatusCode.NOT_FOUND, _C.ERROR_CODE_NOT_FOUND, "no such node")
    UNKNOWN_JOB = _Entry(grpc.StatusCode.NOT_FOUND, _C.ERROR_CODE_NOT_FOUND, "no such job")
    UNKNOWN_ROUND = _Entry(grpc.StatusCode.NOT_FOUND, _C.ERROR_CODE_NOT_FOUND, "no such round")
    UNKNOWN_TASK = _Entry(grpc.StatusCode.NOT_FOUND, _C.ERROR_CODE_NOT_FOUND, "no such task")
    UNKNOWN_MODEL = _Entry(grpc.StatusCode.NOT_FOUND, _C.ERROR_CODE_NOT_FOUND, "no such model")
    NOT_ASSIGNED = _Entry(
        grpc.StatusCode.PERMISSION_DENIED,
        _C.ERROR_CODE_NOT_ASSIGNED,
        "this node is not assigned to that round",
    )
    CHECKSUM_MISMATCH = _Entry(
        grpc.StatusCode.DATA_LOSS, _C.ERROR_CODE_CHECKSUM_MISMATCH, "transfer checksum mismatch"
    )
    TOO_LARGE = _Entry(
        grpc.StatusCode.RESOURCE_EXHAUSTED, _C.ERROR_CODE_TOO_LARGE, "transfer too large"
    )
    BUSY = _Entry(grpc.StatusCode.UNAVAILABLE, _C.ERROR_CODE_BUSY, "coordinator busy, retry later")
    JOB_NOT_CANCELLABLE = _Entry(
        grpc.StatusCode.FAILED_PRECONDITION,
        _C.ERROR_CODE_FAILED_PRECONDITION,
        "job already finished",
    )
    INTERNAL = _Entry(grpc.StatusCode.INTERNAL, _C.ERROR_CODE_UNSPECIFIED, "internal error")

    @property
    def status(self) -> grpc.StatusCode:
        return self.value.status

    @property
    def proto_code(self) -> int:
        return self.value.proto_code

    @property
    def public_message(self) -> str:
        return self.value.message


class FleetError(Exception):
    """An error the caller may see: a catalog code and a detail written for the caller."""

    def __init__(self, code: ErrorCode, detail: str = "", field: str = "") -> None:
        super().__init__(f"{code.name}: {detail}" if detail else code.name)
        self.code = code
        self.detail = detail
        self.field = field

    @property
    def status(self) -> grpc.StatusCode:
        return self.code.status

    @property
    def public_message(self) -> str:
        message = self.code.public_message
        return f"{message}: {self.detail}" if self.detail else message

    def to_detail(self) -> common_pb2.ErrorDetail:
        return common_pb2.ErrorDetail(
            code=self.code.proto_code,  # type: ignore[arg-type]
            message=self.public_message,
            field=self.field,
        )


class Rejection(enum.Enum):
    """Why an update does not count; the value is the metrics label and the registry's reason."""

    LATE = "late"
    DUPLICATE = "duplicate"
    WRONG_SHAPE = "wrong_shape"
    NON_FINITE = "non_finite"
    CHECKSUM = "checksum"
    NOT_ASSIGNED = "not_assigned"
    TOO_LARGE = "too_large"
    BAD_FORMAT = "bad_format"

    @property
    def proto_code(self) -> int:
        return {
            Rejection.LATE: _C.ERROR_CODE_UPDATE_LATE,
            Rejection.DUPLICATE: _C.ERROR_CODE_UPDATE_DUPLICATE,
            Rejection.WRONG_SHAPE: _C.ERROR_CODE_UPDATE_WRONG_SHAPE,
            Rejection.NON_FINITE: _C.ERROR_CODE_UPDATE_NON_FINITE,
            Rejection.CHECKSUM: _C.ERROR_CODE_CHECKSUM_MISMATCH,
            Rejection.NOT_ASSIGNED: _C.ERROR_CODE_NOT_ASSIGNED,
            Rejection.TOO_LARGE: _C.ERROR_CODE_TOO_LARGE,
            Rejection.BAD_FORMAT: _C.ERROR_CODE_BAD_FORMAT,
        }[self]

    @property
    def judged(self) -> bool:
        """Whether the update arrived intact and was judged, so it uses up the node's turn.

        A corrupted or refused transfer does not: the node may send its update again.
        """
        return self in (Rejection.WRONG_SHAPE, Rejection.NON_FINITE)


@dataclass(frozen=True)
class RejectedUpdate:
    reason: Rejection
    message: str

    def to_detail(self) -> common_pb2.ErrorDetail:
        return common_pb2.ErrorDetail(
            code=self.reason.proto_code,  # type: ignore[arg-type]
            message=self.message,
        )
