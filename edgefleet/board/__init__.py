"""Boards run here: an arm64 userland under QEMU user-mode emulation, and what it holds."""
