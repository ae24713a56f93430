"""A chain: the numbers the solvers and the simulator work on (no torch here).

A chain has ``L`` stages ``0..L-1`` followed by the loss, which is treated as stage ``L``.

- ``fw[L]``: forward time of each stage.
- ``bw[L+1]``: backward time of each stage; ``bw[L]`` is the loss (its forward and backward).
- ``cw[L+1]``: size of activation ``a_i`` (``a_0`` is the input, ``a_i`` the output of stage
  ``i-1``); the gradient ``d_i`` of ``a_i`` has the same size.
- ``cbw[L+1]``: ``cbw[i+1]`` is the size of stage ``i``'s tape: everything its forward with grad
  keeps alive for its backward, its output ``a_{i+1}`` included and its input excluded.
  ``cbw[0]`` belongs to no stage and is ignored.
- ``ftmp[L]``: extra memory a forward of stage ``i`` holds while it runs, above its input and what
  it leaves behind.
- ``btmp[L+1]``: extra memory the backward of stage ``i`` holds while it runs, above its tape, its
  input and the incoming gradient; ``btmp[L]`` is the loss's.

``docs/checkpointing.md`` states the memory model exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_KEYS = ("fw", "bw", "cw", "cbw", "ftmp", "btmp")


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


@dataclass(frozen=True)
class Chain:
    """Per-stage times and sizes of a chain of ``L`` stages plus the loss."""

    fw: tuple[float, ...]
    bw: tuple[float, ...]
    cw: tuple[float, ...]
    cbw: tuple[float, ...]
    ftmp: tuple[float, ...]
    btmp: tuple[float, ...]

    def __post_init__(self) -> None:
        for key in _KEYS:
            object.__setattr__(self, key, _as_numbers(key, getattr(self, key)))
        length = len(self.fw)
        if length < 1:
            raise ChainError("'fw' must have at least one stage")
        expected = {
            "bw": length + 1,
            "cw": length + 1,
            "cbw": length + 1,
            "ftmp": length,
            "btmp": length + 1,
        }
        for key, size in expected.items():
            got = len(getattr(self, key))
            if got != size:
                raise ChainError(
                    f"'{key}' must have {size} entries for a chain of {length} stages "
                    f"(len(fw) = {length}), got {got}"
                )

    @property
    def length(self) -> int:
        """Number of stages, the loss excluded."""
        return len(self.fw)

    @property
    def is_integral(self) -> bool:
        """True when every size is a whole number, so the chain can be solved in its own units."""
        sizes = (*self.cw, *self.cbw[1:], *self.ftmp, *self.btmp)
        return all(float(v).is_integer() for v in sizes)

    def to_dict(self) -> dict[str, list[float]]:
        return {key: list(getattr(self, key)) for key in _KEYS}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Chain:
        if not isinstance(data, Mapping):
            raise ChainError(f"a chain must be a JSON object, got {type(data).__name__}")
        missing = [key for key in _KEYS if key not in data]
        if missing:
            raise ChainError(f"missing key(s): {', '.join(missing)}")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise ChainError(f"unknown key(s): {', '.join(unknown)}")
        return cls(**{key: data[key] for key in _KEYS})  # type: ignore[arg-type]

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
