"""Real agent processes (``edgefleet agent run``) for a coordinator under test, and their boards.

Each board gets a data folder with its own frames (small random PNGs, one of them corrupt) and
the teacher's weights; the student's starting weights are a fresh ``small_cnn``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save, save_file

from checkpointing.execution.models import build_model
from tests.integration.orchestrator.fleet import ENROLL

MODEL = "small_cnn"
NUM_CLASSES = 10
IMAGE_SIZE = 32


def student_weights(seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    return save(build_model(MODEL, NUM_CLASSES).state_dict())


@dataclass
class AgentProcess:
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout_s: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


def board_folder(root: Path, name: str, frames: int = 24, seed: int = 0) -> Path:
    """Frames (one of them corrupt) and the teacher's weights for one board."""
    data_dir = root / name
    frames_dir = data_dir / "frames"
    frames_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index in range(frames):
        pixels = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(frames_dir / f"frame_{index:03d}.png")
    (frames_dir / "broken.png").write_bytes(b"not a png at all")
    weights_dir = data_dir / "weights"
    weights_dir.mkdir()
    torch.manual_seed(1)
    save_file(
        build_model(MODEL, NUM_CLASSES).state_dict(), str(weights_dir / f"{MODEL}.safetensors")
    )
    return data_dir


def start_agent(
    data_dir: Path,
    coordinator: str,
    *extra: str,
    token: str = ENROLL,
    hardware_class: str = "test-board",
) -> AgentProcess:
    log = data_dir / f"agent-{time.monotonic_ns()}.log"
    command: list[str] = [sys.executable, "-m", "edgefleet.cli", "agent", "run"]
    command += ["--coordinator", coordinator, "--data-dir", str(data_dir)]
    command += ["--hardware-class", hardware_class, "--name", data_dir.name, "--threads", "1"]
    command += extra
    # Several boards share this machine's cores: one thread each (see AgentConfig.threads).
    env = {**os.environ, "EDGEFLEET_ENROLLMENT_TOKEN": token, "OMP_NUM_THREADS": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    return AgentProcess(data_dir, process, log)


def job_fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "student_model": MODEL,
        "teacher_model": MODEL,
        "image_size": IMAGE_SIZE,
        "num_classes": NUM_CLASSES,
        "batch_size": 8,
        "num_rounds": 2,
        "local_steps": 2,
        "min_nodes": 2,
        "round_deadline_s": 120,
    }
    fields.update(changes)
    return fields
