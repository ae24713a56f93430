"""Constructing an agent only keeps what it is given: no warm-up, no thread, no call out."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import torch

from node_agent.agent import Agent, Startup
from node_agent.board_classes import board_class
from node_agent.config import AgentConfig
from node_agent.memory_budget import BudgetSource, MemoryBudget
from node_agent.runtime import RuntimeBaseline


def test_an_agent_is_built_from_its_startup_without_touching_the_world(tmp_path: Path) -> None:
    config = AgentConfig(coordinator="127.0.0.1:9", enrollment_token="t", data_dir=tmp_path)
    pi3 = board_class("raspberry-pi-3")
    startup = Startup(
        runtime=RuntimeBaseline(300, 0, 500, 100, allocator_fixed=True),
        runtime_baseline_bytes=330_000_000,
        board=pi3,
        budget=MemoryBudget(pi3.default_budget_bytes, BudgetSource.BOARD_CLASS),
        arena=None,
        frames={64: torch.zeros(2, 3, 64, 64, dtype=torch.uint8)},
    )
    threads = threading.active_count()
    # Nothing listens on port 9: a channel only connects on its first call.
    channel = grpc.insecure_channel(config.coordinator)

    agent = Agent(config, threading.Event(), startup, channel)

    assert threading.active_count() == threads
    assert agent.budget.budget_bytes == pi3.default_budget_bytes
    assert agent.runtime_baseline_bytes == 330_000_000
    # The frames it was given are the frames it trains on: the folder (absent here) is not read.
    assert agent._board_frames(64) is startup.frames[64]
    channel.close()
