"""The plan-aware arena (``arena.c``): built here, preloaded into the agent, driven per step.

A training step allocates the same large blocks in the same order every time, so the arena
records one step, plans the blocks' offsets in one resident range and replays them: memory near
the live tensors without faulting the pages in again each step (``arena.c`` says how, and
``docs/benchmarks.md`` what it measured beside glibc's and jemalloc's allocators).

The library replaces ``malloc`` and must be in the process from its start: ``LD_PRELOAD``
(the agent's systemd unit and image set it). ``Arena.loaded()`` finds it in a running process;
without it every call here is a no-op, so the agent trains the same under any allocator.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

SOURCE = Path(__file__).with_name("arena.c")
PRELOAD_ENV = "LD_PRELOAD"
_CACHE_ENV = "EDGEFLEET_CACHE_DIR"
_BUILD_TIMEOUT_S = 120.0


class ArenaBuildError(RuntimeError):
    """The arena could not be compiled here (no C compiler, or it failed: the message says)."""


class _Stats(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "reserved_bytes",
            "planned_bytes",
            "planned_live_bytes",
            "planned_blocks",
            "steps_recorded",
            "steps_replayed",
            "hits",
            "mismatches",
            "overlaps",
            "fallback_blocks",
            "fallback_live_bytes",
            "fallback_peak_bytes",
            "mode",
        )
    ]


@dataclass(frozen=True)
class ArenaStats:
    reserved_bytes: int
    """Address space reserved (no RAM until touched)."""
    planned_bytes: int
    """The plan's extent: what its range holds resident once replayed."""
    planned_live_bytes: int
    """The planned blocks' own live peak in the record: the least any placement needs."""
    planned_blocks: int
    steps_recorded: int
    steps_replayed: int
    hits: int
    """Large blocks placed at their planned offsets."""
    mismatches: int
    """Large blocks whose size or position in the step differed from the record."""
    overlaps: int
    """Planned offsets found still held by a live block (the block went elsewhere)."""
    fallback_blocks: int
    fallback_live_bytes: int
    fallback_peak_bytes: int
    mode: int


class Arena:
    """The arena of this process, as ``arena.c`` exports it."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._begin = library.edgefleet_arena_step_begin
        self._end = library.edgefleet_arena_step_end
        self._stats = library.edgefleet_arena_stats
        self._begin.restype = self._end.restype = self._stats.restype = None
        self._stats.argtypes = [ctypes.POINTER(_Stats)]

    @classmethod
    def loaded(cls) -> Arena | None:
        """The arena if it was preloaded into this process, else None."""
        process = ctypes.CDLL(None)
        try:
            return cls(process)
        except AttributeError:
            return None

    @contextmanager
    def step(self) -> Iterator[None]:
        """Bracket one training step (the training thread's allocations in it are planned)."""
        self._begin()
        try:
            yield
        finally:
            self._end()

    def stats(self) -> ArenaStats:
        raw = _Stats()
        self._stats(ctypes.byref(raw))
        return ArenaStats(**{f.name: int(getattr(raw, f.name)) for f in fields(ArenaStats)})


@contextmanager
def arena_step(arena: Arena | None) -> Iterator[None]:
    """``arena.step()``, or nothing when the process has no arena."""
    if arena is None:
        yield
        return
    with arena.step():
        yield


def source_digest() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]


def default_library_path() -> Path:
    """Where ``build_arena`` puts the library by default: per source version and machine."""
    root = Path(os.environ.get(_CACHE_ENV) or Path.home() / ".cache" / "edgefleet")
    return root / "arena" / f"libedgefleet_arena-{source_digest()}-{platform.machine()}.so"


def build_arena(output: Path | None = None, compiler: str | None = None) -> Path:
    """Compile ``arena.c`` into a shared library (kept when already built from this source)."""
    target = output or default_library_path()
    if target.is_file() and output is None:
        return target
    chosen = compiler or os.environ.get("CC") or "cc"
    if shutil.which(chosen) is None:
        raise ArenaBuildError(
            f"no C compiler {chosen!r} here: install one (Debian: apt-get install gcc) or set CC"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    command = [
        chosen, "-O2", "-Wall", "-Wextra", "-shared", "-fPIC",
        "-o", str(partial), str(SOURCE), "-lpthread", "-ldl",
    ]  # fmt: skip
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ArenaBuildError(f"compiling the arena failed: {error}") from None
    if completed.returncode != 0:
        raise ArenaBuildError(
            f"compiling the arena failed ({' '.join(command)}):\n{completed.stderr[-2000:]}"
        )
    partial.replace(target)
    return target
