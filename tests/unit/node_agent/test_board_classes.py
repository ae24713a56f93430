"""The board classes: real boards' RAM and CPUs, their default budgets, and recognising them."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.board_classes import (
    BOARD_CLASSES,
    GIB,
    MIB,
    UnknownBoardClass,
    board_class,
    device_tree_model,
    recognise,
)
from node_agent.memory_budget import BudgetSource, resolve_budget


def test_every_class_leaves_its_ram_less_the_os_reserve() -> None:
    for known in BOARD_CLASSES:
        assert known.default_budget_bytes == known.ram_bytes - known.os_reserve_bytes
        assert 0 < known.default_budget_bytes < known.ram_bytes


def test_the_classes_are_the_real_boards() -> None:
    pi3 = board_class("raspberry-pi-3")
    odroid = board_class("odroid-xu4")

    assert pi3.ram_bytes == 1 * GIB and "Cortex-A53" in pi3.cpu and pi3.arch == "aarch64"
    assert pi3.supported and "2.9.1" in pi3.torch
    assert board_class("raspberry-pi-4-2gb").ram_bytes == 2 * GIB
    assert board_class("raspberry-pi-4-4gb").ram_bytes == 4 * GIB
    assert board_class("jetson-nano").ram_bytes == 4 * GIB
    assert odroid.arch == "armv7l" and not odroid.supported
    assert "no PyTorch wheel" in odroid.note


def test_an_unknown_class_names_the_known_ones() -> None:
    with pytest.raises(UnknownBoardClass, match="raspberry-pi-3"):
        board_class("raspberry-pi-9")


@pytest.mark.parametrize(
    ("model", "mem_total_bytes", "expected"),
    [
        ("Raspberry Pi 3 Model B Rev 1.2", 906 * MIB, "raspberry-pi-3"),
        ("Raspberry Pi 4 Model B Rev 1.4", 1870 * MIB, "raspberry-pi-4-2gb"),
        ("Raspberry Pi 4 Model B Rev 1.4", 3790 * MIB, "raspberry-pi-4-4gb"),
        ("NVIDIA Jetson Nano Developer Kit", 3960 * MIB, "jetson-nano"),
        ("Hardkernel Odroid XU4", 1990 * MIB, "odroid-xu4"),
    ],
)
def test_boards_are_recognised_from_their_device_tree_model(
    model: str, mem_total_bytes: int, expected: str
) -> None:
    recognised = recognise(model, mem_total_bytes)

    assert recognised is not None and recognised.name == expected


def test_an_unknown_board_is_not_guessed(tmp_path: Path) -> None:
    assert recognise("QEMU KVM Virtual Machine", 2 * GIB) is None
    assert recognise("", 2 * GIB) is None
    assert device_tree_model(tmp_path / "missing") == ""


def test_device_tree_model_strips_the_terminating_nul(tmp_path: Path) -> None:
    path = tmp_path / "model"
    path.write_bytes(b"Raspberry Pi 3 Model B Rev 1.2\0")

    assert device_tree_model(path) == "Raspberry Pi 3 Model B Rev 1.2"


def test_budget_order_configured_then_cgroup_then_class() -> None:
    pi3 = board_class("raspberry-pi-3")

    configured = resolve_budget(600 * MIB, 800 * MIB, pi3)
    capped = resolve_budget(900 * MIB, 800 * MIB, pi3)
    from_cgroup = resolve_budget(0, 800 * MIB, pi3)
    from_class = resolve_budget(0, None, pi3)
    from_coordinator = resolve_budget(0, None, None)

    assert (configured.budget_bytes, configured.source) == (600 * MIB, BudgetSource.CONFIGURED)
    assert (capped.budget_bytes, capped.source) == (800 * MIB, BudgetSource.CAPPED_BY_CGROUP)
    assert (from_cgroup.budget_bytes, from_cgroup.source) == (800 * MIB, BudgetSource.CGROUP)
    assert from_class.budget_bytes == pi3.default_budget_bytes
    assert from_class.source is BudgetSource.BOARD_CLASS
    assert (from_coordinator.budget_bytes, from_coordinator.source) == (
        0,
        BudgetSource.COORDINATOR,
    )


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        resolve_budget(-1, None, None)
