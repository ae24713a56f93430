"""Reading the memory limit of the agent's own cgroup (v1 and v2), from files the test lays out."""

from __future__ import annotations

from pathlib import Path

from node_agent.cgroup_limit import cgroup_memory_limit_bytes

MIB = 1 << 20
_V1_UNLIMITED = "9223372036854771712"


def _proc(tmp_path: Path, mountinfo: str, cgroup: str) -> Path:
    proc_self = tmp_path / "proc-self"
    proc_self.mkdir()
    (proc_self / "mountinfo").write_text(mountinfo)
    (proc_self / "cgroup").write_text(cgroup)
    return proc_self


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_cgroup_v2_limit_is_the_smallest_along_the_path(tmp_path: Path) -> None:
    root = tmp_path / "cg2"
    _write(root / "memory.max", "max")
    _write(root / "system.slice" / "memory.max", str(900 * MIB))
    _write(root / "system.slice" / "agent.service" / "memory.max", "max")
    mountinfo = f"30 23 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    proc_self = _proc(tmp_path, mountinfo, "0::/system.slice/agent.service\n")

    assert cgroup_memory_limit_bytes(proc_self) == 900 * MIB


def test_cgroup_v2_without_a_limit_reads_as_none(tmp_path: Path) -> None:
    root = tmp_path / "cg2"
    _write(root / "memory.max", "max")
    _write(root / "user.slice" / "memory.max", "max")
    mountinfo = f"30 23 0:26 / {root} rw - cgroup2 cgroup2 rw\n"
    proc_self = _proc(tmp_path, mountinfo, "0::/user.slice\n")

    assert cgroup_memory_limit_bytes(proc_self) is None


def test_cgroup_v1_memory_hierarchy_limit(tmp_path: Path) -> None:
    memory = tmp_path / "cg1" / "memory"
    cpu = tmp_path / "cg1" / "cpu"
    _write(memory / "memory.limit_in_bytes", _V1_UNLIMITED)
    _write(memory / "demo" / "memory.limit_in_bytes", str(700 * MIB))
    _write(memory / "demo" / "pole-4m" / "memory.limit_in_bytes", str(800 * MIB))
    _write(cpu / "memory.limit_in_bytes", str(1 * MIB))  # not a memory hierarchy: ignored
    mountinfo = (
        f"32 31 0:29 / {cpu} rw - cgroup cgroup rw,cpu\n"
        f"35 31 0:32 / {memory} rw,relatime - cgroup cgroup rw,memory\n"
        f"41 31 0:38 / {tmp_path / 'unified'} rw - cgroup2 cgroup2 rw\n"
    )
    cgroup = "4:memory:/demo/pole-4m\n1:cpu:/\n0::/\n"
    proc_self = _proc(tmp_path, mountinfo, cgroup)

    assert cgroup_memory_limit_bytes(proc_self) == 700 * MIB


def test_a_container_sees_its_own_cgroup_as_the_mount_root(tmp_path: Path) -> None:
    # Inside a container the hierarchy is mounted from the container's cgroup, and
    # /proc/self/cgroup names the same directory: the mount point itself holds the limit.
    root = tmp_path / "cg2"
    _write(root / "memory.max", str(512 * MIB))
    mountinfo = f"700 690 0:26 /kubepods/pod1/c1 {root} ro - cgroup2 cgroup2 rw\n"
    proc_self = _proc(tmp_path, mountinfo, "0::/kubepods/pod1/c1\n")

    assert cgroup_memory_limit_bytes(proc_self) == 512 * MIB


def test_v1_unlimited_and_missing_files_read_as_none(tmp_path: Path) -> None:
    memory = tmp_path / "memory"
    _write(memory / "memory.limit_in_bytes", _V1_UNLIMITED)
    mountinfo = f"35 31 0:32 / {memory} rw - cgroup cgroup rw,memory\n"
    proc_self = _proc(tmp_path, mountinfo, "4:memory:/gone\n")

    assert cgroup_memory_limit_bytes(proc_self) is None
    assert cgroup_memory_limit_bytes(tmp_path / "no-proc") is None


def test_this_process_reads_without_error() -> None:
    limit = cgroup_memory_limit_bytes()

    assert limit is None or limit > 0
