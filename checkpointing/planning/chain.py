"""A chain: the numbers the solvers and the simulator work on (no torch here).

A chain has ``L`` stages ``0..L-1`` followed by the loss, which is treated as stage ``L``.

- ``fw[L]``: forward time of each stage.
- ``bw[L+1]``: backward time of each stage; ``bw[L]`` is the loss (its forward and backward).
- ``cw[L+1]``: size of activation ``a_i`` (``a_0`` is the input, ``a_i`` the output of stage
  ``i-1``); the gradient ``d_i`` of ``a_i`` has the same size.
- ``cbw[L+1]``: ``cbw[i+1]`` is the size of stage ``i``'s tape: everything its forward with grad
  keeps alive for its backward, its output ``a_{i+1}`` included and its input excluded.
  ``cbw[0]`` belongs to no stage and is ignored.
- ``ftmp[L]``: extra memory a forward of stage ``i`` that records its tape holds while it runs,
  above its input and what it leaves behind.
- ``ftmp_nograd[L]`` (optional, ``ftmp`` by default): the same for a forward without grad, which
  may differ (what would be taped is freed as it goes, but two results may meet).
- ``btmp[L+1]``: extra memory the backward of stage ``i`` holds while it runs, above what is in
  memory before it; ``btmp[L]`` is the loss's.
- ``saves_output[L]`` (optional, all true by default): whether stage ``i``'s tape itself keeps its
  output alive. When it does not, the output is dropped as soon as its gradient exists, as plain
  autograd does; true is the conservative assumption.

``docs/checkpointing.md`` states the memory model exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_KEYS = ("fw", "bw", "cw", "cbw", "ftmp", "btmp")
_OPTIONAL_KEYS = ("saves_output", "ftmp_nograd")


class ChainError(ValueError):
    """A chain description that cannot be used (missing keys, wrong lengths, bad numbers)."""


def _as_numbers(name: str, values: object) -> tuple[float, ...]:
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise ChainError(f"'{name}' must be a list of numbers, got {type(values).__name__}")
    out: list[float] = []
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ChainError(f"'{name}[{index}]' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ChainError(f"'{name}[{index}]' must be finite, got {value!r}")
        if value < 0:
            raise ChainError(f"'{name}[{index}]' must not be negative, got {value!r}")
        out.append(value)
    return tuple(out)


def _as_flags(values: object, length: int) -> tuple[bool, ...]:
    if values is None:
        return (True,) * length
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise ChainError(f"'saves_output' must be a list of booleans, got {type(values).__name__}")
    if len(values) != length:
        raise ChainError(
            f"'saves_output' must have {length} entries for a chain of {length} stages, "
            f"got {len(values)}"
        )
    for index, value in enumerate(values):
        if not isinstance(value, bool):
            raise ChainError(f"'saves_output[{index}]' must be true or false, got {value!r}")
    return tuple(values)


@dataclass(frozen=True)
class Chain:
    """Per-stage times and sizes of a chain of ``L`` stages plus the loss."""

    fw: tuple[float, ...]
    bw: tuple[float, ...]
    cw: tuple[float, ...]
    cbw: tuple[float, ...]
    ftmp: tuple[float, ...]
    btmp: tuple[float, ...]
    saves_output: tuple[bool, ...] | None = None
    ftmp_nograd: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for key in _KEYS:
            object.__setattr__(self, key, _as_numbers(key, getattr(self, key)))
        length = len(self.fw)
        if self.ftmp_nograd is None:
            object.__setattr__(self, "ftmp_nograd", self.ftmp)
        object.__setattr__(self, "ftmp_nograd", _as_numbers("ftmp_nograd", self.ftmp_nograd))
        object.__setattr__(self, "saves_output", _as_flags(self.saves_output, length))
        if length < 1:
            raise ChainError("'fw' must have at least one stage")
        expected = {
            "bw": length + 1,
            "cw": length + 1,
            "cbw": length + 1,
            "ftmp": length,
            "btmp": length + 1,
            "ftmp_nograd": length,
        }
        for key, size in expected.items():
            got = len(getattr(self, key))
            if got != size:
                raise ChainError(
                    f"'{key}' must have {size} entries for a chain of {length} stages "
                    f"(len(fw) = {length}), got {got}"
                )
        for i, saves in enumerate(self.output_saved):
            if not saves and self.cbw[i + 1] < self.cw[i + 1]:
                raise ChainError(
                    f"stage {i}: a tape that does not save its output still holds it, so "
                    f"'cbw[{i + 1}]' ({self.cbw[i + 1]}) must be at least 'cw[{i + 1}]' "
                    f"({self.cw[i + 1]})"
                )

    @property
    def forward_nograd_tmp(self) -> tuple[float, ...]:
        """``ftmp_nograd`` with its default applied (always a full tuple)."""
        assert self.ftmp_nograd is not None, "normalised in __post_init__"
        return self.ftmp_nograd

    @property
    def output_saved(self) -> tuple[bool, ...]:
        """``saves_output`` with its default applied (always a full tuple)."""
        assert self.saves_output is not None, "normalised in __post_init__"
        return self.saves_output

    @property
    def length(self) -> int:
        """Number of stages, the loss excluded."""
        return len(self.fw)

    @property
    def is_integral(self) -> bool:
        """True when every size is a whole number, so the chain can be solved in its own units."""
        sizes = (*self.cw, *self.cbw[1:], *self.ftmp, *self.forward_nograd_tmp, *self.btmp)
        return all(float(v).is_integer() for v in sizes)

    def to_dict(self) -> dict[str, list[float] | list[bool]]:
        data: dict[str, list[float] | list[bool]] = {key: list(getattr(self, key)) for key in _KEYS}
        data["saves_output"] = list(self.output_saved)
        data["ftmp_nograd"] = list(self.forward_nograd_tmp)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Chain:
        if not isinstance(data, Mapping):
            raise ChainError(f"a chain must be a JSON object, got {type(data).__name__}")
        missing = [key for key in _KEYS if key not in data]
        if missing:
            raise ChainError(f"missing key(s): {', '.join(missing)}")
        unknown = sorted(set(data) - set(_KEYS) - set(_OPTIONAL_KEYS))
        if unknown:
            raise ChainError(f"unknown key(s): {', '.join(unknown)}")
        present = [key for key in (*_KEYS, *_OPTIONAL_KEYS) if key in data]
        return cls(**{key: data[key] for key in present})  # type: ignore[arg-type]

    @classmethod
    def from_json_file(cls, path: Path) -> Chain:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ChainError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ChainError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def homogeneous(
        cls, length: int, *, uf: float = 1.0, ub: float = 1.0, size: float = 1.0
    ) -> Chain:
        """Identical stages whose tape is their output and that need no extra memory."""
        if length < 1:
            raise ChainError("a chain needs at least one stage")
        return cls(
            fw=(uf,) * length,
            bw=(ub,) * (length + 1),
            cw=(size,) * (length + 1),
            cbw=(size,) * (length + 1),
            ftmp=(0.0,) * length,
            btmp=(0.0,) * (length + 1),
        )
