"""The runtime the agent trains in, warmed up, and what it holds: the board's runtime baseline.

PyTorch makes part of its state on first use: the autograd engine's threads, the CPU kernels'
caches and workspaces, thread pools. On this machine the first training step of any model costs
about 40 MB that no later step frees and that no tensor accounts for. Measured before that
step, the baseline would leave those bytes to the plan's training share, whose prediction knows
nothing of them; so the agent runs one step of a tiny model first, and measures after.

The allocator is set first. glibc's malloc raises its mmap threshold after every large free, up
to 32 MiB, so that the activations a step frees go back to its heap rather than to the kernel,
and the heap fragments under checkpointing's pattern of freeing and recomputing: measured here
at batch 31 under the optimal schedule, the process peaked 83 MB above its baseline after 10
steps and 96 MB after 20, where the tensors need 41 MB; with the threshold fixed at 128 KiB
every large tensor is mapped and unmapped, the peak was 36 MB after 10 and after 20 steps, and
a step took about 1.5 times as long (fresh pages are zeroed by the kernel). A board that must
not exceed its plan pays that time.

``edgefleet agent baseline`` measures it in a fresh process, so that a board's budget (or the
demo's cap) can be set above it before the agent starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import torch
import torchvision  # noqa: F401 - part of the runtime whose memory the baseline measures
from torch.nn import functional

from checkpointing.models import build_model
from checkpointing.process_memory import rss_bytes

_LOG = logging.getLogger(__name__)
_M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter; setting it also ends the threshold's dynamic adjustment."""
MMAP_THRESHOLD_BYTES = 128 * 1024
"""glibc's own starting threshold, kept fixed."""
_WARM_UP_MODEL = "small_cnn"
_WARM_UP_CLASSES = 10
_WARM_UP_SIDE = 32


def fix_allocator() -> bool:
    """Map every allocation above 128 KiB on its own, for good (glibc only; False elsewhere)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        _LOG.warning("no mallopt in %s: the allocator keeps its dynamic mmap threshold", name)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def warm_up() -> None:
    """One training step and one inference of a tiny convolutional model, then nothing kept."""
    model = build_model(_WARM_UP_MODEL, _WARM_UP_CLASSES).train()
    inputs = torch.rand(2, 3, _WARM_UP_SIDE, _WARM_UP_SIDE)
    functional.cross_entropy(model(inputs), torch.tensor([0, 1])).backward()
    with torch.no_grad():
        model.eval()(inputs)


def warmed_baseline_bytes(threads: int = 0) -> int:
    """This process's resident memory once the runtime is warm (``threads`` 0: torch's own)."""
    fix_allocator()
    if threads:
        torch.set_num_threads(threads)
    warm_up()
    return rss_bytes()
