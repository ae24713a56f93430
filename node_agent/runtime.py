"""The runtime the agent trains in, warmed up, and what it holds: the board's runtime baseline.

PyTorch makes part of its state on first use: the autograd engine's threads, the CPU kernels'
caches and workspaces, thread pools. On this machine the first training step of any model costs
about 40 MB that no later step frees and that no tensor accounts for. Measured before that
step, the baseline would leave those bytes to the plan's training share, whose prediction knows
nothing of them; so the agent runs one step of a tiny model first, and measures after.

``edgefleet agent baseline`` measures it in a fresh process, so that a board's budget (or the
demo's cap) can be set above it before the agent starts.
"""

from __future__ import annotations

import torch
import torchvision  # noqa: F401 - part of the runtime whose memory the baseline measures
from torch.nn import functional

from checkpointing.models import build_model
from checkpointing.process_memory import rss_bytes

_WARM_UP_MODEL = "small_cnn"
_WARM_UP_CLASSES = 10
_WARM_UP_SIDE = 32


def warm_up() -> None:
    """One training step and one inference of a tiny convolutional model, then nothing kept."""
    model = build_model(_WARM_UP_MODEL, _WARM_UP_CLASSES).train()
    inputs = torch.rand(2, 3, _WARM_UP_SIDE, _WARM_UP_SIDE)
    functional.cross_entropy(model(inputs), torch.tensor([0, 1])).backward()
    with torch.no_grad():
        model.eval()(inputs)


def warmed_baseline_bytes(threads: int = 0) -> int:
    """This process's resident memory once the runtime is warm (``threads`` 0: torch's own)."""
    if threads:
        torch.set_num_threads(threads)
    warm_up()
    return rss_bytes()
