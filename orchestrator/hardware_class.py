"""Which boards share a memory model: same architecture, CPU model and RAM size."""

from __future__ import annotations

import re

from orchestrator.storage.records import Hardware

_GRANULE_BYTES = 256 * 2**20
"""RAM is reported a little under the nominal size (firmware reserves some): round it."""


def hardware_class(hardware: Hardware) -> str:
    """``arch/cpu-model/RAM``, e.g. ``aarch64/cortex-a53/1gib`` for a Raspberry Pi 3."""
    cpu = re.sub(r"[^a-z0-9]+", "-", hardware.cpu_model.lower()).strip("-") or "unknown-cpu"
    granules = max(1, round(hardware.ram_bytes / _GRANULE_BYTES))
    ram_gib = granules * _GRANULE_BYTES / 2**30
    ram = f"{ram_gib:g}gib"
    return f"{hardware.arch.lower()}/{cpu}/{ram}"
