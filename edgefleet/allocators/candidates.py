"""The allocators ``edgefleet bench allocator`` compares, and the environment that selects each.

An allocator has to be chosen before the process's first allocation, so every candidate is the
environment of a fresh child process: glibc's malloc reads its ``MALLOC_*_`` variables (aliases
of the ``glibc.malloc`` tunables) at start-up, and jemalloc replaces malloc when preloaded, then
reads ``MALLOC_CONF``. The agent's own fix is the exception: it calls ``mallopt`` after its
imports (``node_agent.runtime.fix_allocator``), so that candidate asks the child to make the same
call at the same point rather than imitating it with a variable.

Why these: glibc's default raises its mmap threshold as large blocks are freed and keeps freed
memory in its heaps (fast, but the heap fragments under checkpointing's free-and-recompute
pattern); the agent's fixed 128 KiB threshold maps and unmaps every large tensor (memory back at
once, but every step faults its pages in again). The others hold freed pages without, one hopes,
fragmenting: glibc with trimming off and a large top pad, glibc with fewer arenas, and jemalloc,
whose default purges allocations above ``oversize_threshold`` (8 MiB) at once from a dedicated
arena and the rest after ``dirty_decay_ms`` (10 s).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

JEMALLOC_PATH = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
"""Debian's libjemalloc2 (5.3)."""
AGENT_FIX_ENV = "EDGEFLEET_ALLOCATOR_AGENT_FIX"
"""Set to ``1``: the child calls ``node_agent.runtime.fix_allocator`` after its imports."""
ARENA_LIBRARY = "libedgefleet_arena (node_agent/arena.c, compiled for the run)"
REFERENCE = "glibc-default"
"""The candidate every step time is compared with."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_PRELOAD = "LD_PRELOAD"
_JEMALLOC_CONF = "MALLOC_CONF"
# glibc's and jemalloc's variables all start with MALLOC_; a parent's own settings must not leak
# into a candidate's child, or the default would not be the default.
_C10_THP = "C10_THP_MEM_ALLOC_ENABLE"
"""Read by torch's CPU allocator (``c10::alloc_cpu``): blocks of 2 MiB and more are aligned to
2 MiB and advised ``MADV_HUGEPAGE``, so the kernel faults them in 2 MiB at a time."""
_ALLOCATOR_PREFIXES = ("MALLOC_", "GLIBC_TUNABLES", _C10_THP, _PRELOAD, AGENT_FIX_ENV)

_MIB = 2**20
_GLIBC_LARGEST_MMAP_THRESHOLD = 32 * _MIB
"""glibc refuses a larger threshold on 64-bit (half its 64 MiB heap size)."""
_NEVER_TRIM = 2**40
_TOP_PAD = 64 * _MIB
_NO_DECAY = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def is_allocator_variable(name: str) -> bool:
    return name.startswith(_ALLOCATOR_PREFIXES)


@dataclass(frozen=True)
class Candidate:
    """One allocator configuration: variables set in the child, jemalloc preloaded or not."""

    name: str
    description: str
    variables: tuple[tuple[str, str], ...] = ()
    jemalloc: bool = False
    agent_fix: bool = False
    arena: bool = False
    """Preload edgefleet's plan-aware arena (``node_agent/arena.c``, built for the run)."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"a candidate's name is lower-case letters, digits and dashes, got {self.name!r}"
            )
        names = [name for name, _ in self.variables]
        if len(set(names)) != len(names):
            raise ValueError(f"candidate {self.name!r} sets a variable twice: {names}")
        for name in names:
            if name in (_PRELOAD, AGENT_FIX_ENV) or not is_allocator_variable(name):
                raise ValueError(
                    f"candidate {self.name!r}: {name!r} is not an allocator setting "
                    f"(MALLOC_*, GLIBC_TUNABLES, {_C10_THP}; jemalloc, the arena and the agent's "
                    "fix are flags)"
                )
        if _JEMALLOC_CONF in names and not self.jemalloc:
            raise ValueError(f"candidate {self.name!r}: MALLOC_CONF is read by jemalloc only")
        if self.arena and (self.jemalloc or self.agent_fix or self.variables):
            raise ValueError(
                f"candidate {self.name!r}: the arena replaces malloc's large blocks on its own; "
                "it takes no other allocator setting"
            )
        if self.jemalloc and self.agent_fix:
            # mallopt under jemalloc reaches glibc's unused malloc: it would measure nothing.
            raise ValueError(f"candidate {self.name!r}: the agent's mallopt fix is glibc's")

    def settings(self) -> dict[str, str]:
        """What the child's environment gains, for reports."""
        settings = dict(self.variables)
        if self.jemalloc:
            settings[_PRELOAD] = str(JEMALLOC_PATH)
        if self.agent_fix:
            settings[AGENT_FIX_ENV] = "1"
        if self.arena:
            settings[_PRELOAD] = ARENA_LIBRARY
        return settings


CANDIDATES: tuple[Candidate, ...] = (
    Candidate(REFERENCE, "glibc malloc as it starts: dynamic mmap threshold, trimming at 128 KiB"),
    Candidate(
        "glibc-agent-128k",
        "the agent today: mallopt(M_MMAP_THRESHOLD, 128 KiB) after import, fixed",
        agent_fix=True,
    ),
    Candidate(
        "glibc-agent-128k-thp",
        "the agent's 128 KiB threshold, torch's blocks of 2 MiB and more on transparent huge pages",
        ((_C10_THP, "1"),),
        agent_fix=True,
    ),
    Candidate(
        "glibc-agent-128k-hugetlb",
        "the agent's 128 KiB threshold, glibc advising huge pages for its mapped blocks",
        (("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1"),),
        agent_fix=True,
    ),
    Candidate(
        "glibc-thp",
        "glibc's default, torch's blocks of 2 MiB and more on transparent huge pages",
        ((_C10_THP, "1"),),
    ),
    Candidate(
        "glibc-hold",
        "mmap threshold fixed at glibc's largest (32 MiB), trimming off, 64 MiB top pad",
        (
            ("MALLOC_MMAP_THRESHOLD_", str(_GLIBC_LARGEST_MMAP_THRESHOLD)),
            ("MALLOC_TRIM_THRESHOLD_", str(_NEVER_TRIM)),
            ("MALLOC_TOP_PAD_", str(_TOP_PAD)),
        ),
    ),
    Candidate(
        "glibc-heap-only",
        "no mmap at all (MALLOC_MMAP_MAX_=0): every block from the heaps; trimming off, 64 MiB pad",
        (
            ("MALLOC_MMAP_MAX_", "0"),
            ("MALLOC_TRIM_THRESHOLD_", str(_NEVER_TRIM)),
            ("MALLOC_TOP_PAD_", str(_TOP_PAD)),
        ),
    ),
    Candidate(
        "glibc-arenas-2",
        "at most 2 malloc arenas (one per core here)",
        (("MALLOC_ARENA_MAX", "2"),),
    ),
    Candidate(
        "arena",
        "edgefleet's plan-aware arena: one step's large blocks recorded, planned, then replayed",
        arena=True,
    ),
    Candidate("jemalloc", "jemalloc 5.3 preloaded, its defaults", jemalloc=True),
    Candidate(
        "jemalloc-no-decay",
        "jemalloc, freed pages never purged (dirty and muzzy decay off)",
        ((_JEMALLOC_CONF, _NO_DECAY),),
        jemalloc=True,
    ),
    Candidate(
        "jemalloc-no-oversize",
        "jemalloc without the dedicated, purge-at-once arena for blocks over 8 MiB",
        ((_JEMALLOC_CONF, "oversize_threshold:0"),),
        jemalloc=True,
    ),
)
_BY_NAME = {candidate.name: candidate for candidate in CANDIDATES}


def candidates_named(text: str) -> tuple[Candidate, ...]:
    """The candidates a comma-separated list names, ``glibc-default`` first even if not named.

    ``ValueError`` for an unknown name, a name given twice or an empty list.
    """
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("name at least one candidate")
    unknown = [name for name in names if name not in _BY_NAME]
    if unknown:
        raise ValueError(f"unknown candidates {unknown}; known: {', '.join(_BY_NAME)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a candidate is named twice: {text!r}")
    # Step times are reported as ratios to glibc's default measured in the same run.
    ordered = [REFERENCE, *(name for name in names if name != REFERENCE)]
    return tuple(_BY_NAME[name] for name in ordered)


def child_environment(
    candidate: Candidate,
    inherited: Mapping[str, str],
    jemalloc_path: Path = JEMALLOC_PATH,
    arena_path: Path | None = None,
) -> dict[str, str]:
    """``inherited`` without any allocator setting of its own, plus ``candidate``'s
    (``arena_path``: the built arena, for a candidate that preloads it)."""
    environment = {
        name: value for name, value in inherited.items() if not is_allocator_variable(name)
    }
    environment.update(candidate.variables)
    if candidate.jemalloc:
        environment[_PRELOAD] = str(jemalloc_path)
    if candidate.agent_fix:
        environment[AGENT_FIX_ENV] = "1"
    if candidate.arena:
        if arena_path is None:
            raise ValueError(f"candidate {candidate.name!r} needs the arena's library path")
        environment[_PRELOAD] = str(arena_path)
    return environment
