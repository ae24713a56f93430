"""Model weights on a board: local files in, state dicts to and from safetensors bytes, deltas.

Weights come from local files only: safetensors, or a torchvision state dict saved with
``torch.save`` (read with ``weights_only=True``, so a file cannot run code). Round weights and
updates travel as safetensors bytes; an update is the round's change, new minus global, for
every floating tensor, and the new value of integer buffers (a BatchNorm's step counter), which
the coordinator keeps from the global model anyway.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import nn

SUFFIXES = (".safetensors", ".pth", ".pt")


class WeightsError(ValueError):
    """Weights that cannot be read, or that do not fit the model."""


def weights_file(directory: Path, model_name: str) -> Path:
    """``<directory>/<model_name>.safetensors`` (or ``.pth``/``.pt``); ``WeightsError`` if none."""
    for suffix in SUFFIXES:
        path = directory / f"{model_name}{suffix}"
        if path.is_file():
            return path
    names = ", ".join(f"{model_name}{suffix}" for suffix in SUFFIXES)
    raise WeightsError(f"no weights for {model_name} in {directory} (looked for {names})")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, SafetensorError, RuntimeError, ValueError) as exc:
        raise WeightsError(f"cannot read weights {path}: {exc}") from None
    if isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return dict(loaded)


def load_into(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``model`` exactly (every name, every shape), else ``WeightsError``."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise WeightsError(f"{what} do not fit the model: {' '.join(first)}") from None


def to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    return save_bytes({name: tensor.detach().contiguous() for name, tensor in state.items()})


def from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    try:
        return load_bytes(data)
    except (SafetensorError, ValueError) as exc:
        raise WeightsError(f"not a safetensors file: {exc}") from None


def delta(
    after: dict[str, torch.Tensor], before: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """What training changed: ``after - before`` for floating tensors, ``after`` otherwise."""
    return {
        name: (value - before[name]) if value.is_floating_point() else value.clone()
        for name, value in after.items()
    }
