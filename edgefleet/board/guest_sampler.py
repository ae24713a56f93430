"""The guest's own peak memory over a training run under qemu-user, sampled from inside it.

Under emulation the kernel's high-water mark (``VmHWM``, what ``edgefleet.harness.train_child``
reports natively) counts qemu's translation cache and heap with the program, and no kernel
counter keeps the guest's part apart. So a thread in the guest reads the guest's own memory
(``guest_memory``: smaps over the ranges the emulated maps lists) every ``interval_s`` and keeps
the largest reading. That is a sampled peak, a lower bound of the true one by what the program
allocates and frees between two readings; an emulated training step lasts minutes and its peak
(the activations held at the start of the backward pass) lasts seconds to tens of seconds, so
the readings land on it. Each reading also gives qemu's own share at that moment (the whole
process's ``VmRSS`` less the guest's), whose largest value is what the emulator adds to the
memory a cgroup charges.

Enabled by the environment (the scenario's wrapper sets it, nothing does natively):
``EDGEFLEET_GUEST_SAMPLE_S`` the interval; ``EDGEFLEET_GUEST_PEAK_FILE`` a file rewritten with
the figures whenever the peak rises, so that a run the OOM killer ends still leaves the peak it
reached. Standard library only: it runs inside the guest.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from edgefleet.board.guest_memory import GuestMemory, GuestMemoryError, read_guest_memory

SAMPLE_ENV = "EDGEFLEET_GUEST_SAMPLE_S"
PEAK_FILE_ENV = "EDGEFLEET_GUEST_PEAK_FILE"


@dataclass(frozen=True)
class GuestPeak:
    """What the readings found: the guest's figures at the start and at their largest."""

    baseline_rss_bytes: int
    """The guest's resident memory at the first reading (imports done, before the model)."""
    baseline_anon_bytes: int
    baseline_file_bytes: int
    peak_rss_bytes: int
    """The largest of the guest's readings."""
    emulator_share_bytes: int
    """The largest of qemu's own share (``VmRSS`` less the guest's) over the readings."""
    process_peak_rss_bytes: int
    """The largest ``VmRSS`` read: the guest and qemu together."""
    samples: int

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError("a peak needs at least one reading")
        if self.peak_rss_bytes < self.baseline_rss_bytes:
            raise ValueError("the peak cannot be below the first reading")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class GuestSampler:
    """Reads the guest's memory now and every ``interval_s`` on a daemon thread until ``stop``."""

    def __init__(self, interval_s: float, peak_file: Path | None = None) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._interval_s = interval_s
        self._peak_file = peak_file
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        first = read_guest_memory()
        self._peak = GuestPeak(
            baseline_rss_bytes=first.guest_rss_bytes,
            baseline_anon_bytes=first.guest_anon_bytes,
            baseline_file_bytes=first.guest_file_bytes,
            peak_rss_bytes=first.guest_rss_bytes,
            emulator_share_bytes=_emulator_share(first),
            process_peak_rss_bytes=first.status_rss_bytes,
            samples=1,
        )
        self._publish()
        self._thread = threading.Thread(target=self._run, name="guest-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self.sample()

    def sample(self) -> None:
        try:
            reading = read_guest_memory()
        except GuestMemoryError:
            return  # a mapping gone between reads: the next reading counts
        with self._lock:
            old = self._peak
            self._peak = GuestPeak(
                baseline_rss_bytes=old.baseline_rss_bytes,
                baseline_anon_bytes=old.baseline_anon_bytes,
                baseline_file_bytes=old.baseline_file_bytes,
                peak_rss_bytes=max(old.peak_rss_bytes, reading.guest_rss_bytes),
                emulator_share_bytes=max(old.emulator_share_bytes, _emulator_share(reading)),
                process_peak_rss_bytes=max(old.process_peak_rss_bytes, reading.status_rss_bytes),
                samples=old.samples + 1,
            )
            rose = self._peak.peak_rss_bytes > old.peak_rss_bytes
        if rose:
            self._publish()

    def _publish(self) -> None:
        if self._peak_file is None:
            return
        partial = self._peak_file.with_suffix(".partial")
        partial.write_text(json.dumps(self._peak.to_dict()))
        partial.replace(self._peak_file)

    def stop(self) -> GuestPeak:
        """Stop the thread, take a last reading and return the figures."""
        self._stopped.set()
        self._thread.join()
        self.sample()
        self._publish()
        with self._lock:
            return self._peak


def _emulator_share(reading: GuestMemory) -> int:
    return max(reading.status_rss_bytes - reading.guest_rss_bytes, 0)


def sampler_from_environment() -> GuestSampler | None:
    """A started sampler when ``EDGEFLEET_GUEST_SAMPLE_S`` is set, else None (native runs)."""
    interval = os.environ.get(SAMPLE_ENV)
    if not interval:
        return None
    peak_file = os.environ.get(PEAK_FILE_ENV)
    return GuestSampler(float(interval), Path(peak_file) if peak_file else None)
