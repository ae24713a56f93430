"""The agent refuses, before importing torch, a board that cannot run the installed torch."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.platform_support import (
    Platform,
    UnsupportedPlatform,
    check,
    cpuinfo_lists_atomics,
    this_platform,
)


@pytest.mark.parametrize("arch", ["armv7l", "armv6l"])
def test_32_bit_arm_is_refused_naming_the_supported_architectures(arch: str) -> None:
    board = Platform(arch=arch, torch_version="", has_lse_atomics=False)

    with pytest.raises(UnsupportedPlatform) as refused:
        check(board)

    message = str(refused.value)
    assert "32-bit ARM" in message and arch in message
    assert "x86_64" in message and "aarch64" in message
    assert "source" in message


@pytest.mark.parametrize("version", ["2.10.0", "2.14.1", "2.14.1+cu130", "3.0.0"])
def test_a_torch_that_uses_lse_is_refused_on_armv8_0_cores(version: str) -> None:
    board = Platform(arch="aarch64", torch_version=version, has_lse_atomics=False)

    with pytest.raises(UnsupportedPlatform) as refused:
        check(board)

    message = str(refused.value)
    assert version in message and "SIGILL" in message
    assert "torch 2.9.1" in message and "Raspberry Pi" in message


@pytest.mark.parametrize(
    "board",
    [
        Platform(arch="aarch64", torch_version="2.9.1", has_lse_atomics=False),
        Platform(arch="aarch64", torch_version="2.5.0", has_lse_atomics=False),
        Platform(arch="aarch64", torch_version="2.14.1+cu130", has_lse_atomics=True),
        Platform(arch="x86_64", torch_version="2.14.1", has_lse_atomics=False),
    ],
)
def test_boards_that_run_their_torch_pass(board: Platform) -> None:
    check(board)


def test_a_missing_torch_says_how_to_install_it() -> None:
    with pytest.raises(UnsupportedPlatform, match=r"edgefleet\[agent\]"):
        check(Platform(arch="aarch64", torch_version="", has_lse_atomics=False))


def test_an_unknown_architecture_is_named() -> None:
    with pytest.raises(UnsupportedPlatform, match="riscv64"):
        check(Platform(arch="riscv64", torch_version="2.9.1", has_lse_atomics=False))


def test_cpuinfo_features_tell_whether_the_cpu_has_lse(tmp_path: Path) -> None:
    a53 = tmp_path / "a53"
    a53.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd03\n")
    a76 = tmp_path / "a76"
    a76.write_text("processor\t: 0\nFeatures\t: fp asimd atomics fphp asimdhp cpuid\n")

    assert not cpuinfo_lists_atomics(a53)
    assert cpuinfo_lists_atomics(a76)
    assert not cpuinfo_lists_atomics(tmp_path / "missing")


def test_this_machine_passes_with_its_installed_torch() -> None:
    board = this_platform()

    check(board)
    assert board.torch_version
