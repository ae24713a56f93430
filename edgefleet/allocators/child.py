"""One candidate's training run: ``python -m edgefleet.allocators.child JOB RESULT``.

The process the agent trains in, under the allocator its environment chose: the agent's
``mallopt`` fix when ``EDGEFLEET_ALLOCATOR_AGENT_FIX`` asks for it, the agent's warm-up step,
then ``edgefleet.harness.train_child`` on ``JOB``. That child's baseline is taken when its
``train`` starts, so here it includes the warm-up, as the agent's runtime baseline does; its
result gains ``allocator``: the settings the process saw, whether the fix was applied and which
replacement malloc library is mapped (so a preload that silently failed shows).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgefleet.allocators.candidates import AGENT_FIX_ENV, is_allocator_variable

_MAPS = Path("/proc/self/maps")
_REPLACEMENT_MALLOCS = ("jemalloc", "tcmalloc", "mimalloc", "edgefleet_arena")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # Imported here, after the interpreter's start: the agent, too, fixes its allocator after
    # importing torch, so the candidate sees the same allocations before the fix.
    from edgefleet.harness import train_child
    from node_agent.arena import Arena
    from node_agent.runtime import fix_allocator, warm_up

    if len(args) != 2:
        return train_child.main(args)
    fixed = fix_allocator() if os.environ.get(AGENT_FIX_ENV) == "1" else False
    arena = Arena.loaded()
    warm_up()
    code = train_child.main(args, arena.step if arena is not None else None)
    result_path = Path(args[1])
    try:
        result = json.loads(result_path.read_text())
    except (OSError, json.JSONDecodeError):
        return code
    result["allocator"] = _allocator_facts(fixed)
    if arena is not None:
        result["allocator"]["arena"] = asdict(arena.stats())
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    return code


def _allocator_facts(agent_fix_applied: bool) -> dict[str, Any]:
    import torch

    try:
        maps = _MAPS.read_text()
    except OSError:
        maps = ""
    libraries = sorted(
        {
            line.split()[-1]
            for line in maps.splitlines()
            if any(name in line for name in _REPLACEMENT_MALLOCS) and "/" in line
        }
    )
    return {
        "settings": {
            name: value for name, value in os.environ.items() if is_allocator_variable(name)
        },
        "agent_fix_applied": agent_fix_applied,
        "malloc_libraries": libraries,
        "torch_threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    sys.exit(main())
