"""Which values may share memory, and which operations modify their input in place."""

from __future__ import annotations

import copy
import operator
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

import torch
from torch import nn

_V = TypeVar("_V", bound=Hashable)

# Modules whose output may be their input itself in some mode (dropout in eval mode returns it).
MAY_RETURN_INPUT = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)

INPLACE_OPERATORS = frozenset(
    {
        operator.iadd,
        operator.isub,
        operator.imul,
        operator.itruediv,
        operator.ifloordiv,
        operator.imod,
        operator.ipow,
        operator.imatmul,
        operator.iand,
        operator.ior,
        operator.ixor,
        operator.ilshift,
        operator.irshift,
        operator.setitem,
    }
)


class AliasGroups(Generic[_V]):
    """Union-find over values: two values in one group may share memory."""

    def __init__(self) -> None:
        self._parent: dict[_V, _V] = {}

    def find(self, value: _V) -> _V:
        root = value
        while self._parent.get(root, root) != root:
            root = self._parent[root]
        while value != root:
            parent = self._parent[value]
            self._parent[value] = root
            value = parent
        return root

    def union(self, a: _V, b: _V) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self._parent[root_b] = root_a

    def union_by_key(self, keys: dict[_V, int]) -> None:
        """Join values whose storages are the same (``keys``: value -> storage identity)."""
        first: dict[int, _V] = {}
        for value, key in keys.items():
            self.union(first.setdefault(key, value), value)


def has_inplace_flag(module: nn.Module) -> bool:
    return getattr(module, "inplace", False) is True


def storage_key(tensor: torch.Tensor) -> int:
    # The address of the StorageImpl: views share it, and the tensors are kept alive while the
    # keys are compared, so an address cannot be reused by another storage meanwhile.
    return int(tensor.untyped_storage()._cdata)


def out_of_place(module: nn.Module) -> nn.Module:
    """A module computing what ``module`` computes without modifying its input."""
    if has_inplace_flag(module):
        # A shallow copy keeps the same parameter objects; only the copy's flag changes.
        twin = copy.copy(module)
        setattr(twin, "inplace", False)  # noqa: B010 (nn.Module.__setattr__ is typed for tensors)
        return twin
    return _ClonedInput(module)


class _ClonedInput(nn.Module):
    """Runs ``inner`` on a copy of the input, for a module that modifies its input by design."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> Any:
        return self.inner(x.clone())
