"""Run by ``test_arena`` in a child, with or without the arena preloaded; prints one JSON object.

``steps``: a small net trained for a few steps, each one an arena step (the batch changes
half-way, and one step keeps an activation past its end), with its losses, the kept activation's
checksum and the arena's counters. ``blocks``: malloc's contract on large blocks, through ctypes.
"""

from __future__ import annotations

import ctypes
import json
import sys
from dataclasses import asdict

import torch
from torch import nn

from node_agent.arena import Arena, arena_step

_LARGE = 1 << 20


def _steps() -> dict[str, object]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    arena = Arena.loaded()
    losses: list[float] = []
    kept: torch.Tensor | None = None
    kept_sum = 0.0
    for step in range(10):
        batch = 8 if step < 6 else 12
        inputs = torch.rand(batch, 3, 32, 32)
        targets = torch.randint(0, 4, (batch,))
        with arena_step(arena):
            features = model[:3](inputs)
            loss = nn.functional.cross_entropy(model[3:](features), targets)
            loss.backward()
            if step == 3:
                # Outlives its step: the next steps' planned blocks must not land on it.
                kept = features.detach()
                kept_sum = float(kept.sum())
            del features
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert kept is not None
    return {
        "losses": losses,
        "kept_intact": float(kept.sum()) == kept_sum,
        "stats": asdict(arena.stats()) if arena is not None else None,
    }


def _blocks() -> dict[str, object]:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.realloc.restype = ctypes.c_void_p
    libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.malloc_usable_size.restype = ctypes.c_size_t
    libc.malloc_usable_size.argtypes = [ctypes.c_void_p]
    libc.posix_memalign.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_size_t,
        ctypes.c_size_t,
    ]
    block = libc.malloc(_LARGE)
    ctypes.memset(block, 7, _LARGE)
    usable = libc.malloc_usable_size(block)
    grown = libc.realloc(block, 3 * _LARGE)
    kept = ctypes.string_at(grown, _LARGE) == bytes([7]) * _LARGE
    libc.free(grown)
    aligned: dict[int, bool] = {}
    for alignment in (64, 4096):
        pointer = ctypes.c_void_p()
        code = libc.posix_memalign(ctypes.byref(pointer), alignment, _LARGE)
        aligned[alignment] = code == 0 and (pointer.value or 1) % alignment == 0
        libc.free(pointer)
    return {"usable_at_least_size": usable >= _LARGE, "realloc_kept": kept, "aligned": aligned}


if __name__ == "__main__":
    print(json.dumps(_steps() if sys.argv[1] == "steps" else _blocks()))
