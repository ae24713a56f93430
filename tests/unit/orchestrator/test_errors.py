import grpc
import pytest

from orchestrator.errors import ErrorCode, FleetError, Rejection
from protos.edgefleet.v1 import common_pb2


def test_every_code_has_a_status_and_a_message() -> None:
    for code in ErrorCode:
        assert isinstance(code.status, grpc.StatusCode)
        assert code.public_message
        assert code.status is not grpc.StatusCode.OK


def test_codes_are_distinct_entries() -> None:
    entries = [(code.status, code.public_message) for code in ErrorCode]

    assert len(set(entries)) == len(entries)


def test_errors_travel_as_protocol_details() -> None:
    error = FleetError(ErrorCode.INVALID_JOB, "rounds: missing", "spec.num_rounds")

    detail = error.to_detail()

    assert detail.code == common_pb2.ERROR_CODE_INVALID_ARGUMENT
    assert detail.message == "invalid job: rounds: missing"
    assert detail.field == "spec.num_rounds"


def test_every_rejection_has_its_own_protocol_code() -> None:
    codes = [reason.proto_code for reason in Rejection]

    assert len(set(codes)) == len(codes)
    assert common_pb2.ERROR_CODE_UNSPECIFIED not in codes
    assert {r for r in Rejection if r.judged} == {Rejection.WRONG_SHAPE, Rejection.NON_FINITE}


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.BAD_ENROLLMENT_TOKEN, grpc.StatusCode.UNAUTHENTICATED),
        (ErrorCode.NOT_ASSIGNED, grpc.StatusCode.PERMISSION_DENIED),
        (ErrorCode.CHECKSUM_MISMATCH, grpc.StatusCode.DATA_LOSS),
    ],
)
def test_errors_carry_status_and_detail(code: ErrorCode, status: grpc.StatusCode) -> None:
    error = FleetError(code, "round 3 of job 7")

    assert error.status is status
    assert error.public_message == f"{code.public_message}: round 3 of job 7"
    assert FleetError(code).public_message == code.public_message
