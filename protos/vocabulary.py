"""The protocol's enums and the code's own, converted in one place, by name.

Each vocabulary is one Python enum in the room that owns it (the engine's ``Optimizer``, the
coordinator's ``FailureKind``, ``RoundOutcome`` and ``AggregationRule``) whose values are the
lower-case names of the proto enum's values without their prefix: ``Optimizer.SGD = "sgd"`` is
``OPTIMIZER_SGD`` on the wire. So there is no table to keep in step;
``tests/unit/protos/test_vocabulary.py`` checks that each pair names the same members. Nothing
here imports a role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, cast

from protos.edgefleet.v1 import common_pb2, fleet_pb2, jobs_pb2

V = TypeVar("V", bound=int)
"""A proto enum's value type (mypy-protobuf's ``ValueType``, an int)."""


class ProtoEnum(Protocol[V]):
    """What the generated enum wrappers (``common_pb2.Optimizer`` and the like) provide."""

    def Name(self, number: V) -> str: ...

    def Value(self, name: str) -> V: ...

    def keys(self) -> list[str]: ...


class UnknownValue(ValueError):
    """A value one side of the wire does not know (``UNSPECIFIED``, or a newer peer's)."""


@dataclass(frozen=True)
class Vocabulary(Generic[V]):
    wrapper: ProtoEnum[V]
    prefix: str

    def to_proto(self, name: str) -> V:
        """The proto value of ``name`` (``"sgd"`` -> ``OPTIMIZER_SGD``)."""
        try:
            return self.wrapper.Value(self.prefix + name.upper())
        except ValueError:
            raise UnknownValue(f"{name!r} has no {self.prefix}* value in the protocol") from None

    def from_proto(self, number: int) -> str:
        """The name of proto value ``number`` as the code's enum spells it; ``UnknownValue``
        for ``*_UNSPECIFIED`` or a number this version of the protocol does not define."""
        try:
            name = self.wrapper.Name(cast(V, number))
        except ValueError:
            raise UnknownValue(f"{self.prefix}* has no value {number}") from None
        if name == self.prefix + "UNSPECIFIED":
            raise UnknownValue(f"{self.prefix}UNSPECIFIED names nothing")
        return name.removeprefix(self.prefix).lower()

    def name_or_none(self, number: int) -> str | None:
        """``from_proto``, but None for a value not set or not known (a field left empty)."""
        try:
            return self.from_proto(number)
        except UnknownValue:
            return None

    def to_proto_or(self, name: str, unknown: V) -> V:
        """``to_proto``, but ``unknown`` for a name this protocol has no value for."""
        try:
            return self.to_proto(name)
        except UnknownValue:
            return unknown

    def names(self) -> set[str]:
        """Every name the proto enum defines, ``UNSPECIFIED`` left out, as the code spells it."""
        return {
            key.removeprefix(self.prefix).lower()
            for key in self.wrapper.keys()  # noqa: SIM118 - a wrapper, not a dict
            if key != self.prefix + "UNSPECIFIED"
        }


OPTIMIZER = Vocabulary(common_pb2.Optimizer, "OPTIMIZER_")
FAILURE_KIND = Vocabulary(fleet_pb2.FailureKind, "FAILURE_KIND_")
ROUND_OUTCOME = Vocabulary(jobs_pb2.RoundOutcome, "ROUND_OUTCOME_")
AGGREGATION_RULE = Vocabulary(jobs_pb2.AggregationRule, "AGGREGATION_RULE_")
