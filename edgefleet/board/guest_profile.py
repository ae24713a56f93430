"""A model's memory model measured on an emulated board: the program the Pi 3 scenario runs under
qemu-user (``python3.11 -m edgefleet.board.guest_profile MODEL CLASSES BATCHES IMAGES``).

It profiles the model with the board's own torch at small batch and image sizes (a MobileNetV2
224x224 step takes close to a minute emulated; 64x64 and 128x128 at batches 1 and 2 take
seconds each) and fits the memory model that predicts the larger sizes, as a board's agent
does when the coordinator asks it to profile. Stage times are emulated: only their ratios mean
something, which is all the planner's time limit uses. One JSON object on stdout.
"""

from __future__ import annotations

import json
import platform
import sys
import time


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        sys.exit("usage: python -m edgefleet.board.guest_profile MODEL CLASSES BATCHES IMAGES")
    model, classes, batches, images = args[0], int(args[1]), _sizes(args[2]), _sizes(args[3])
    started = time.perf_counter()
    import torch

    from checkpointing.execution.profile import ProfileConfig
    from checkpointing.execution.profile_sizes import fit_model

    # One timed run per stage after one warm-up: memory does not depend on repeats, and only the
    # stages' relative times are used, which emulation keeps only roughly anyway.
    fitted = fit_model(
        model,
        batch_sizes=batches,
        image_sizes=images,
        num_classes=classes,
        config=ProfileConfig(repeats=1, warmup=1),
    )
    payload = {
        "machine": platform.machine(),
        "torch_version": torch.__version__,
        "profile_s": time.perf_counter() - started,
        "memory_model": fitted.to_dict(),
    }
    sys.stdout.write(json.dumps(payload) + "\n")


if __name__ == "__main__":
    main()
