"""Each vocabulary's Python enum and proto enum name the same members, converted by name."""

from __future__ import annotations

import enum

import pytest

from checkpointing.planning.budget import Optimizer
from orchestrator.outcomes import FailureKind, RoundOutcome
from protos.edgefleet.v1 import common_pb2, fleet_pb2, jobs_pb2
from protos.vocabulary import FAILURE_KIND, OPTIMIZER, ROUND_OUTCOME, UnknownValue, Vocabulary


@pytest.mark.parametrize(
    ("vocabulary", "members"),
    [(OPTIMIZER, Optimizer), (FAILURE_KIND, FailureKind), (ROUND_OUTCOME, RoundOutcome)],
)
def test_the_enum_and_the_protocol_name_the_same_members(
    vocabulary: Vocabulary, members: type[enum.Enum]
) -> None:
    assert {member.value for member in members} == vocabulary.names()
    for member in members:
        assert vocabulary.from_proto(vocabulary.to_proto(member.value)) == member.value


def test_conversion_goes_by_name() -> None:
    assert OPTIMIZER.to_proto(Optimizer.ADAM) == common_pb2.OPTIMIZER_ADAM
    assert FAILURE_KIND.from_proto(fleet_pb2.FAILURE_KIND_OUT_OF_MEMORY) == "out_of_memory"
    assert ROUND_OUTCOME.to_proto("all_reported") == jobs_pb2.ROUND_OUTCOME_ALL_REPORTED


@pytest.mark.parametrize(
    ("convert", "message"),
    [
        (lambda: OPTIMIZER.from_proto(common_pb2.OPTIMIZER_UNSPECIFIED), "UNSPECIFIED"),
        (lambda: OPTIMIZER.from_proto(99), "no value 99"),
        (lambda: OPTIMIZER.to_proto("lion"), "'lion' has no OPTIMIZER_"),
    ],
)
def test_what_one_side_does_not_know_is_a_clear_error(convert: object, message: str) -> None:
    with pytest.raises(UnknownValue, match=message):
        convert()  # type: ignore[operator]


def test_the_tolerant_conversions_fall_back_for_what_is_unknown() -> None:
    assert OPTIMIZER.name_or_none(common_pb2.OPTIMIZER_UNSPECIFIED) is None
    assert OPTIMIZER.name_or_none(common_pb2.OPTIMIZER_SGD) == "sgd"
    fallback = fleet_pb2.FAILURE_KIND_INTERNAL
    assert FAILURE_KIND.to_proto_or("melted", fallback) == fallback
    assert FAILURE_KIND.to_proto_or("no_data", fallback) == fleet_pb2.FAILURE_KIND_NO_DATA
