"""The memory limit of the cgroup this process runs in: a board's real budget where there is one.

A container (Docker's ``--memory``, a Kubernetes limit), a systemd unit's ``MemoryMax`` and the
demo's per-board caps all put the agent in a memory cgroup whose limit, not the RAM in
``/proc/meminfo``, is what the kernel enforces: the OOM killer acts at the limit however much
RAM the board has. The limit that applies is the smallest along the path from the process's own
cgroup up to the root of the hierarchy, since every ancestor's limit covers its descendants.

cgroup v2: one hierarchy, ``memory.max`` (``max`` for none). cgroup v1: the hierarchy whose
mount carries the ``memory`` controller, ``memory.limit_in_bytes`` (no limit reads as the
largest page-aligned 64-bit value). The process's path inside each hierarchy is in
``/proc/self/cgroup``; where the hierarchy is mounted, and from which root (a container sees
its own cgroup as ``/``), is in ``/proc/self/mountinfo``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_PROC_SELF = Path("/proc/self")
_UNLIMITED_V1_BYTES = 1 << 62
"""cgroup v1 has no word for "no limit": it reports ``PAGE_COUNTER_MAX`` pages (about 2^63
bytes). Anything above 4 EiB is that, not a limit."""


@dataclass(frozen=True)
class _Mount:
    root: PurePosixPath
    """The hierarchy's directory that is mounted (``/`` outside containers)."""
    mount_point: Path
    fs_type: str
    super_options: frozenset[str]


def _mounts(mountinfo: str) -> list[_Mount]:
    mounts = []
    for line in mountinfo.splitlines():
        before, separator, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not separator or len(fields) < 5 or len(tail) < 3:
            continue
        mounts.append(
            _Mount(
                root=PurePosixPath(fields[3]),
                mount_point=Path(fields[4]),
                fs_type=tail[0],
                super_options=frozenset(tail[2].split(",")),
            )
        )
    return mounts


def _memberships(cgroup: str) -> dict[str, PurePosixPath]:
    """Controller list (``""`` for cgroup v2's unified hierarchy) → this process's path."""
    found = {}
    for line in cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            found[parts[1]] = PurePosixPath(parts[2])
    return found


def _directories(mount: _Mount, path: PurePosixPath) -> list[Path]:
    """The cgroup's directory under the mount and its ancestors up to the mount, innermost first."""
    try:
        relative = path.relative_to(mount.root)
    except ValueError:
        # The process sits outside what this mount shows (another namespace's view): nothing to
        # read there.
        return []
    directory = mount.mount_point / relative
    chain = [directory]
    while directory != mount.mount_point:
        directory = directory.parent
        chain.append(directory)
    return chain


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max" or not text.isdigit():
        return None
    value = int(text)
    return None if value >= _UNLIMITED_V1_BYTES else value


def cgroup_memory_limit_bytes(proc_self: Path = _PROC_SELF) -> int | None:
    """The smallest memory limit over this process's cgroups and their ancestors; None where
    there is none (or no cgroup file system is visible)."""
    try:
        mounts = _mounts((proc_self / "mountinfo").read_text())
        memberships = _memberships((proc_self / "cgroup").read_text())
    except OSError:
        return None
    limits: list[int] = []
    for mount in mounts:
        if mount.fs_type == "cgroup2" and "" in memberships:
            files = [d / "memory.max" for d in _directories(mount, memberships[""])]
        elif mount.fs_type == "cgroup" and "memory" in mount.super_options:
            path = next(
                (p for controllers, p in memberships.items() if "memory" in controllers.split(",")),
                None,
            )
            if path is None:
                continue
            files = [d / "memory.limit_in_bytes" for d in _directories(mount, path)]
        else:
            continue
        limits += [limit for limit in map(_read_limit, files) if limit is not None]
    return min(limits) if limits else None
