"""Board agents as separate processes, each under a real memory cap (a cgroup where possible).

The cap holds the whole agent process: its runtime, frames, models and training. What the cap's
controller saw (its peak, its out-of-memory kills) is read back when the agent ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from checkpointing.execution.process_memory import ProcessMemoryError, status_bytes
from edgefleet.harness.hardcap import MemoryCap, memory_cap
from node_agent.arena import PRELOAD_ENV

_STOP_TIMEOUT_S = 60.0


def agent_environment(arena_library: Path | None) -> dict[str, str]:
    """The agents' environment: one OpenMP thread each, and the plan-aware arena preloaded
    when it could be built (as the agent's image and systemd unit preload it on a board)."""
    # The boards share this machine's cores: one thread each (see AgentConfig.threads); OpenMP's
    # spinning threads on oversubscribed cores made training many times slower.
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    environment.pop(PRELOAD_ENV, None)
    if arena_library is not None:
        environment[PRELOAD_ENV] = str(arena_library)
    return environment


@dataclass
class CappedAgent:
    name: str
    cap_bytes: int
    process: subprocess.Popen[bytes]
    cap: MemoryCap
    log: Path
    oom_kills: int | None = None
    """Kills by the cap's out-of-memory killer, read once the agent ended (None: not counted)."""

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_bytes(self) -> int:
        try:
            return status_bytes("VmRSS", self.process.pid)
        except ProcessMemoryError:
            return 0


def agent_command(
    coordinator: str,
    data_dir: Path,
    budget_bytes: int,
    hardware_class: str,
    name: str,
    frames: Path,
) -> list[str]:
    return [
        sys.executable, "-m", "edgefleet.cli", "agent", "run",
        "--coordinator", coordinator,
        "--data-dir", str(data_dir),
        "--memory-budget", str(budget_bytes),
        "--hardware-class", hardware_class,
        "--name", name,
        "--frames", str(frames),
        "--threads", "1",
    ]  # fmt: skip


@contextmanager
def capped_agents(
    specs: list[tuple[str, int, list[str], Path]],
    enrollment_token: str,
    environment: dict[str, str],
) -> Iterator[list[CappedAgent]]:
    """Start ``(name, cap_bytes, command, log)`` agents, each in its own cap; stop them at exit."""
    env = {**environment, "EDGEFLEET_ENROLLMENT_TOKEN": enrollment_token}
    agents: list[CappedAgent] = []
    with ExitStack() as stack:
        for name, cap_bytes, command, log in specs:
            cap = stack.enter_context(memory_cap(cap_bytes))
            sink = stack.enter_context(log.open("wb"))
            process = subprocess.Popen(
                cap.wrapped(command),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
            agents.append(CappedAgent(name, cap_bytes, process, cap, log))
        try:
            yield agents
        finally:
            for agent in agents:
                if agent.alive():
                    agent.process.send_signal(signal.SIGTERM)
            for agent in agents:
                try:
                    agent.process.wait(timeout=_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    agent.process.kill()
                    agent.process.wait()
                agent.oom_kills = agent.cap.oom_kills()
