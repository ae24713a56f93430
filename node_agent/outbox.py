"""Updates computed but not yet acknowledged, kept on disk until the coordinator answers.

A board that trained a round must not lose that work to a dropped connection or a restart:
the update goes to ``<data dir>/outbox/<task id>.safetensors`` with its header beside it
(``.json``) before the first upload attempt, and leaves only once the coordinator accepted or
rejected it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class PendingUpdate:
    task_id: str
    job_id: str
    round: int
    num_samples: int
    measured_peak_bytes: int
    train_loss: float
    train_duration_s: float


class Outbox:
    def __init__(self, data_dir: Path) -> None:
        self._dir = data_dir / "outbox"
        self._dir.mkdir(parents=True, exist_ok=True)

    def put(self, update: PendingUpdate, data: bytes) -> None:
        stem = self._stem(update.task_id)
        _write_atomically(stem.with_suffix(".safetensors"), data)
        # The header last: a header without its file never exists.
        _write_atomically(stem.with_suffix(".json"), json.dumps(asdict(update)).encode())

    def pending(self) -> Iterator[tuple[PendingUpdate, bytes]]:
        for header in sorted(self._dir.glob("*.json")):
            update = PendingUpdate(**json.loads(header.read_text()))
            yield update, header.with_suffix(".safetensors").read_bytes()

    def remove(self, task_id: str) -> None:
        stem = self._stem(task_id)
        for suffix in (".json", ".safetensors"):
            stem.with_suffix(suffix).unlink(missing_ok=True)

    def _stem(self, task_id: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in task_id)
        return self._dir / safe


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    partial.replace(path)
