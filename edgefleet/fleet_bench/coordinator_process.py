"""A real coordinator in its own process: ``edgefleet coordinator serve``, started and stopped.

The benchmarks measure the coordinator as operators run it: its own process, its own data folder,
the default configuration (fsync on), listening on a free port of 127.0.0.1; its memory and CPU
time are read from ``/proc`` (``edgefleet.fleet_bench.proc``).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgefleet.fleet_bench.proc import maps_library, process_cpu_s, status_bytes
from edgefleet.fleet_bench.processes import BenchError, child_command, log_tail, stop_process

ENROLLMENT_ENV = "EDGEFLEET_ENROLLMENT_TOKEN"
ADMIN_ENV = "EDGEFLEET_ADMIN_TOKEN"
_LISTENING = re.compile(r"coordinator listening on (\S+):(\d+)")
_START_TIMEOUT_S = 60.0
_POLL_S = 0.05


@dataclass(frozen=True)
class Tokens:
    enrollment: str
    admin: str

    @classmethod
    def fresh(cls) -> Tokens:
        return cls(enrollment=secrets.token_urlsafe(24), admin=secrets.token_urlsafe(24))

    @property
    def admin_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.admin}")]


@dataclass(frozen=True)
class Coordinator:
    address: str
    pid: int
    tokens: Tokens
    log_path: Path

    def peak_rss_bytes(self) -> int:
        """The process's high-water mark of resident memory (``VmHWM``) since it started."""
        return status_bytes(self.pid, "VmHWM")

    def rss_bytes(self) -> int:
        return status_bytes(self.pid, "VmRSS")

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)

    def loaded_torch(self) -> bool:
        """Whether libtorch is mapped into the process (the coordinator must run without it)."""
        return maps_library(self.pid, "libtorch")


@contextmanager
def running_coordinator(data_dir: Path, tokens: Tokens) -> Iterator[Coordinator]:
    """Start ``edgefleet coordinator serve`` on a free port; stop it when the block ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / "coordinator.log"
    command = child_command("coordinator", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir))
    env = {**os.environ, ENROLLMENT_ENV: tokens.enrollment, ADMIN_ENV: tokens.admin}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    try:
        address = _wait_until_listening(process, log_path)
        yield Coordinator(address, process.pid, tokens, log_path)
    finally:
        stop_process(process)


def _wait_until_listening(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = _LISTENING.search(log_path.read_text(errors="replace"))
        if found:
            return f"{found.group(1)}:{found.group(2)}"
        if process.poll() is not None:
            raise BenchError(
                f"the coordinator exited with status {process.returncode}:\n{log_tail(log_path)}"
            )
        time.sleep(_POLL_S)
    raise BenchError(
        f"the coordinator did not listen within {_START_TIMEOUT_S:.0f} s:\n{log_tail(log_path)}"
    )
