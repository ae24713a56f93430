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

What the baseline counts: the process's anonymous memory, and of its mapped files only the
pages the warm-up step used (``file_allowance_bytes``), not ``RssFile``. The kernel maps what
happens to sit in the page cache around each page touched, so ``RssFile`` after the same imports
was 323 MB in one virtual environment and 526 MB in another, and it gives those pages back under
a memory limit before anything else; the pages a training step uses are what it cannot give back
without thrashing. Measured here (x86-64, torch 2.14.1): 280 MB anonymous, 415-494 MB ``RssFile``,
52 MB of it used by the warm-up step, the same in every run. Training touches kernels the tiny
warm-up model does not; those pages show up in the step's measured peak, which the planner's and
the guard's margins absorb.

torchvision is not part of the runtime: ``checkpointing.execution.models`` imports it when a
torchvision model is built (87 MB anonymous here), and the profile of such a model reports that
cost.

``edgefleet agent baseline`` measures it in a fresh process, so that a board's budget (or the
demo's cap) can be set above it before the agent starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from dataclasses import dataclass

import torch
from torch.nn import functional

from checkpointing.execution.models import build_model
from checkpointing.execution.process_memory import (
    clear_referenced,
    referenced_file_bytes,
    resident_memory,
)
from checkpointing.execution.split import split_model
from node_agent.arena import Arena

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
    """One training step and one inference of a tiny convolutional model, and the model split
    into the engine's stages as a train task splits its student, then nothing kept.

    Splitting imports what tracing needs (torch.fx and what it loads: 150 MB of RSS measured
    here); a baseline taken before it left those bytes to the first task, whose step then rose
    that much above its plan."""
    model = build_model(_WARM_UP_MODEL, _WARM_UP_CLASSES).train()
    inputs = torch.rand(2, 3, _WARM_UP_SIDE, _WARM_UP_SIDE)
    split_model(model, inputs)
    functional.cross_entropy(model(inputs), torch.tensor([0, 1])).backward()
    with torch.no_grad():
        model.eval()(inputs)


@dataclass(frozen=True)
class RuntimeBaseline:
    """What the agent's process holds with its runtime warm, and the accounting the plan and
    the memory guard share: private memory (anonymous and shared) plus the file pages the
    runtime uses."""

    rss_anon_bytes: int
    rss_shmem_bytes: int
    rss_file_bytes: int
    """Mapped file pages resident now, reported for comparison only."""
    file_allowance_bytes: int
    """The file pages the warm-up step used."""
    allocator_fixed: bool

    @property
    def allocator(self) -> str:
        """Which allocator holds the training's large blocks, for logs and reports."""
        if Arena.loaded() is not None:
            return "edgefleet-arena"
        return "glibc-fixed-threshold" if self.allocator_fixed else "as-found"

    @property
    def runtime_baseline_bytes(self) -> int:
        return self.rss_anon_bytes + self.rss_shmem_bytes + self.file_allowance_bytes

    def remeasured(self) -> RuntimeBaseline:
        """The same allowance over this process's private memory now (frames loaded, say)."""
        now = resident_memory()
        return RuntimeBaseline(
            rss_anon_bytes=now.rss_anon_bytes,
            rss_shmem_bytes=now.rss_shmem_bytes,
            rss_file_bytes=now.rss_file_bytes,
            file_allowance_bytes=self.file_allowance_bytes,
            allocator_fixed=self.allocator_fixed,
        )


def measure_runtime(threads: int = 0) -> RuntimeBaseline:
    """Fix the allocator, warm the runtime up and measure it (``threads`` 0: torch's own)."""
    fixed = fix_allocator()
    if threads:
        torch.set_num_threads(threads)
    cleared = clear_referenced()
    warm_up()
    now = resident_memory()
    # Without clear_refs every resident file page reads as used: RssFile is the safe fallback.
    allowance = referenced_file_bytes() if cleared else now.rss_file_bytes
    return RuntimeBaseline(
        rss_anon_bytes=now.rss_anon_bytes,
        rss_shmem_bytes=now.rss_shmem_bytes,
        rss_file_bytes=now.rss_file_bytes,
        file_allowance_bytes=min(allowance, now.rss_file_bytes),
        allocator_fixed=fixed,
    )
