"""Schedules: sequences of operations on a chain, written as rotor does (``Fe_3``, ``Bwd_2``).

Operations on stage ``i`` (see ``docs/checkpointing.md`` for their memory semantics):

- ``Fc_i``: forward without grad, keeping the input ``a_i`` (a checkpoint) and storing ``a_{i+1}``.
- ``Fn_i``: forward without grad, dropping the input ``a_i`` once ``a_{i+1}`` is computed.
- ``Fe_i``: forward recording the tape of stage ``i`` (its output ``a_{i+1}`` included).
- ``Bwd_i``: backward of stage ``i`` from its tape and ``d_{i+1}``, giving ``d_i``.
- ``Loss``: the loss's forward and backward from ``a_L``, giving ``d_L``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass


class OpKind(enum.Enum):
    FORWARD_CHECK = "Fc"
    FORWARD_NOGRAD = "Fn"
    FORWARD_ENABLE = "Fe"
    BACKWARD = "Bwd"
    LOSS = "Loss"

    @property
    def is_forward(self) -> bool:
        return self in (OpKind.FORWARD_CHECK, OpKind.FORWARD_NOGRAD, OpKind.FORWARD_ENABLE)


@dataclass(frozen=True)
class Op:
    kind: OpKind
    stage: int

    def __str__(self) -> str:
        if self.kind is OpKind.LOSS:
            return "Loss"
        return f"{self.kind.value}_{self.stage}"


_OP_RE = re.compile(r"^(Fc|Fn|Fe|Bwd)_(\d+)$")


def parse_op(text: str, length: int) -> Op:
    """Parse one operation of a chain of ``length`` stages; ``ValueError`` names a bad one."""
    if text == "Loss":
        return Op(OpKind.LOSS, length)
    match = _OP_RE.match(text)
    if match is None:
        raise ValueError(f"unknown operation {text!r}")
    stage = int(match.group(2))
    if stage >= length:
        raise ValueError(f"operation {text!r} names stage {stage}, the chain has {length} stages")
    return Op(OpKind(match.group(1)), stage)


@dataclass(frozen=True)
class Schedule:
    """An ordered sequence of operations for a chain of ``length`` stages."""

    length: int
    ops: tuple[Op, ...]

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def to_strings(self) -> list[str]:
        return [str(op) for op in self.ops]

    @classmethod
    def from_strings(cls, length: int, texts: Iterable[str]) -> Schedule:
        return cls(length, tuple(parse_op(text, length) for text in texts))

    def count(self, kind: OpKind) -> int:
        return sum(1 for op in self.ops if op.kind is kind)


def make_schedule(length: int, ops: Sequence[Op]) -> Schedule:
    return Schedule(length, tuple(ops))
