"""Splitting an ``nn.Sequential``: its leaf children are the stages, no tracing needed."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensorMode

from checkpointing.execution.split.aliasing import (
    MAY_RETURN_INPUT,
    AliasGroups,
    has_inplace_flag,
    out_of_place,
    storage_key,
)
from checkpointing.execution.split.stage import SplitError, Stage, span_name


def is_plain_sequential(module: nn.Module) -> TypeGuard[nn.Sequential]:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _flatten_sequential(sequential: nn.Sequential, prefix: str = "") -> list[tuple[str, nn.Module]]:
    leaves: list[tuple[str, nn.Module]] = []
    for name, child in sequential.named_children():
        path = f"{prefix}.{name}" if prefix else name
        # A container with its own hooks must run as a whole, or the hooks would be skipped.
        has_hooks = bool(child._forward_hooks or child._forward_pre_hooks)
        if is_plain_sequential(child) and not has_hooks:
            leaves.extend(_flatten_sequential(child, path))
        else:
            leaves.append((path, child))
    return leaves


@dataclass
class _ChildFacts:
    """Values ``a_0..a_n`` (``a_0`` the input, ``a_{j+1}`` child ``j``'s output)."""

    groups: AliasGroups[int]
    mutates_input: list[bool]  # child j modifies a_j (or memory it shares) in place


def _observe_children(
    children: Sequence[tuple[str, nn.Module]], example_input: torch.Tensor
) -> tuple[dict[int, int], list[bool]]:
    """Storage keys of ``a_0, a_1, ...`` and whether each child bumped its input's version, from
    fake tensors, for the children before the first one fake tensors cannot run."""
    fake_mode = FakeTensorMode()
    keys: dict[int, int] = {}
    bumped: list[bool] = []
    alive: list[torch.Tensor] = []
    try:
        value: torch.Tensor = fake_mode.from_tensor(example_input)
        keys[0] = storage_key(value)
        alive.append(value)
        for index, (path, module) in enumerate(children):
            with FakeCopyMode(fake_mode):
                fake_module = copy.deepcopy(module)
            version = value._version
            with fake_mode:
                result = fake_module(value)
            if not isinstance(result, torch.Tensor):
                raise SplitError(
                    f"Sequential child '{path}' ({type(module).__name__}) returns "
                    f"{type(result).__name__}; every stage must return exactly one tensor"
                )
            bumped.append(value._version != version)
            keys[index + 1] = storage_key(result)
            alive.append(result)
            value = result
    except SplitError:
        raise
    except Exception:
        # Data-dependent control flow or a kernel without a fake implementation: the child runs
        # for real all the same, and conservative rules decide the cuts from there on.
        pass
    return keys, bumped


def _is_torch_module(module: nn.Module) -> bool:
    return type(module).__module__.startswith("torch.nn.")


def _child_facts(
    children: Sequence[tuple[str, nn.Module]], example_input: torch.Tensor
) -> _ChildFacts:
    keys, bumped = _observe_children(children, example_input)
    groups: AliasGroups[int] = AliasGroups()
    groups.union_by_key(keys)
    mutates: list[bool] = []
    for index, (_, module) in enumerate(children):
        observed = index < len(bumped)
        mutates.append(has_inplace_flag(module) or (observed and bumped[index]))
        # An unobserved module of the user's may hand back its input (`return x` on one branch).
        may_return_input = isinstance(module, MAY_RETURN_INPUT) or not (
            observed or _is_torch_module(module)
        )
        if mutates[index] or may_return_input:
            groups.union(index, index + 1)
    return _ChildFacts(groups, mutates)


def _input_mutators(facts: _ChildFacts) -> list[int]:
    input_group = facts.groups.find(0)
    return [
        index
        for index, mutates in enumerate(facts.mutates_input)
        if mutates and facts.groups.find(index) == input_group
    ]


def split_sequential(model: nn.Sequential, example_input: torch.Tensor) -> list[Stage]:
    children = _flatten_sequential(model)
    if not children:
        raise SplitError(f"{type(model).__name__} holds no module, so it has no stage")
    facts = _child_facts(children, example_input)
    mutators = _input_mutators(facts)
    if mutators:
        for index in mutators:
            path, module = children[index]
            children[index] = (path, out_of_place(module))
        facts = _child_facts(children, example_input)
        still = _input_mutators(facts)
        if still:
            path, module = children[still[0]]
            raise SplitError(
                f"Sequential child '{path}' ({type(module).__name__}) modifies the model input "
                "in place even with inplace=False"
            )

    starts = [0]
    for boundary in range(1, len(children)):
        group = facts.groups.find(boundary)
        mutated_later = any(
            facts.mutates_input[k] and facts.groups.find(k) == group
            for k in range(boundary, len(children))
        )
        if not mutated_later:
            starts.append(boundary)
    stages: list[Stage] = []
    for start, end in zip(starts, [*starts[1:], len(children)], strict=True):
        members = children[start:end]
        module = members[0][1] if len(members) == 1 else nn.Sequential(*(m for _, m in members))
        stages.append(Stage(module, span_name([path for path, _ in members])))
    return stages
