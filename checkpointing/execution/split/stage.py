"""A stage of a chain, and the error a model that cannot be cut raises."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


class SplitError(ValueError):
    """A model that cannot be cut into a chain; the message names the module or fx node at fault."""


@dataclass(frozen=True)
class Stage:
    """One link of the chain: ``module`` takes one tensor and returns one tensor."""

    module: nn.Module
    name: str


def run_stages(stages: Sequence[Stage], x: torch.Tensor) -> torch.Tensor:
    """Plain sequential forward through the chain."""
    for stage in stages:
        x = stage.module(x)
    return x


def span_name(labels: Sequence[str]) -> str:
    if labels[0] == labels[-1]:
        return labels[0]
    return f"{labels[0]}..{labels[-1]}"
