"""The agent's runtime measured inside an emulated board: the program ``edgefleet bench board``
runs under qemu-user (``python3.11 -m edgefleet.board.runtime_probe --threads N``).

It does what the agent's process does before its first task, in the same order: imports what
``edgefleet agent run`` imports (``node_agent.agent``), then fixes the allocator, warms the
runtime up and measures it (``node_agent.runtime.measure_runtime``). Those figures come from
``/proc/self/status`` and the whole process's smaps, so under emulation they include qemu's own
memory; the guest's own (what the board itself would hold) is read with ``guest_memory`` right
after, the file allowance counted over the guest's mappings only. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's own)")
    threads = parser.parse_args(argv).threads
    started = time.perf_counter()
    # What the agent's process imports is part of its baseline (torch among it).
    import node_agent.agent  # noqa: F401

    import_s = time.perf_counter() - started
    import torch

    from edgefleet.board.guest_memory import read_guest_memory
    from node_agent.runtime import measure_runtime

    started = time.perf_counter()
    runtime = measure_runtime(threads)
    warm_up_s = time.perf_counter() - started
    # Read straight after: measure_runtime cleared the pages' referenced bits before its
    # warm-up, so the guest's referenced file pages are the ones the warm-up used.
    guest = read_guest_memory()
    payload = {
        "machine": platform.machine(),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "import_s": import_s,
        "warm_up_s": warm_up_s,
        "guest": guest.to_dict(),
        "runtime": {
            "runtime_baseline_bytes": runtime.runtime_baseline_bytes,
            "rss_anon_bytes": runtime.rss_anon_bytes,
            "rss_shmem_bytes": runtime.rss_shmem_bytes,
            "rss_file_bytes": runtime.rss_file_bytes,
            "file_allowance_bytes": runtime.file_allowance_bytes,
            "allocator_fixed": runtime.allocator_fixed,
        },
    }
    sys.stdout.write(json.dumps(payload) + "\n")


if __name__ == "__main__":
    main()
