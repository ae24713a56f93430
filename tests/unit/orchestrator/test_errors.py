import grpc
import pytest

from orchestrator.errors import ErrorCode, FleetError


def test_every_code_has_a_status_and_a_message() -> None:
    for code in ErrorCode:
        assert isinstance(code.status, grpc.StatusCode)
        assert code.public_message
        assert code.status is not grpc.StatusCode.OK


def test_codes_are_distinct_entries() -> None:
    entries = [(code.status, code.public_message) for code in ErrorCode]

    assert len(set(entries)) == len(entries)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.BAD_ENROLLMENT_TOKEN, grpc.StatusCode.UNAUTHENTICATED),
        (ErrorCode.DUPLICATE_UPDATE, grpc.StatusCode.ALREADY_EXISTS),
        (ErrorCode.CHECKSUM_MISMATCH, grpc.StatusCode.DATA_LOSS),
    ],
)
def test_errors_carry_status_and_detail(code: ErrorCode, status: grpc.StatusCode) -> None:
    error = FleetError(code, "round 3 of job 7")

    assert error.status is status
    assert error.public_message == f"{code.public_message}: round 3 of job 7"
    assert FleetError(code).public_message == code.public_message
