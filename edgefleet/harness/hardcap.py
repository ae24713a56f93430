"""Run a training job in a child process whose memory is capped for real, and say how it went.

A prediction that a plan fits a board is proved by running it where exceeding the budget is
fatal. ``run_capped`` starts ``python -m edgefleet.harness.train_child`` under one of:

- ``cgroup_v1``: a fresh memory cgroup with ``memory.limit_in_bytes`` (and
  ``memory.memsw.limit_in_bytes`` where swap accounting exists, so that swapping cannot hide
  usage). Past the limit the kernel reclaims what it can and then OOM-kills the child;
- ``cgroup_v2``: the same with ``memory.max`` and ``memory.swap.max = 0``;
- ``rlimit``: ``RLIMIT_AS`` where no cgroup can be created. It caps address space, not resident
  memory, and torch reserves gigabytes of address space it never touches (about 3.5 GB after
  ``import torch`` on x86-64 with the CUDA build), so such a cap is far looser than an RSS
  budget of the same size and an allocation past it fails (``MemoryError``) instead of a kill.

The child joins its cgroup, or sets its limit, in a tiny ``/bin/sh`` wrapper before ``exec``-ing
Python, so no allocation of the interpreter escapes the cap; the wrapper rather than
``preexec_fn`` because the parent may run threads (torch's), with which ``preexec_fn`` may
deadlock.

What a cgroup charges differs from RSS: it charges the anonymous memory, kernel memory and the
page cache the child faults in itself, while shared-library pages already cached by another
process are in the child's RSS but charged elsewhere. So a run can survive with a peak RSS above
its cap by up to its file-backed RSS (about 300 MB for torch), and a cap binds first on
anonymous memory: tensors, heap, the interpreter's own state.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from checkpointing.execution.process_memory import ProcessMemoryError, peak_rss_bytes
from checkpointing.planning.budget import OPTIMIZERS, Optimizer

Mechanism = Literal["auto", "cgroup_v1", "cgroup_v2", "rlimit"]
MECHANISMS: tuple[Mechanism, ...] = ("auto", "cgroup_v1", "cgroup_v2", "rlimit")

# Failure kinds of a run that did not survive.
OOM_KILL = "oom_kill"
MEMORY_ERROR = "memory_error"
TIMEOUT = "timeout"
CRASHED = "crashed"

_CHILD_MODULE = "edgefleet.harness.train_child"
_CHILD_EXIT_JOB_ERROR = 2
_CHILD_EXIT_MEMORY_ERROR = 3
# The wrapper's own failure to apply the cap; Python never exits with it on its own.
_WRAPPER_EXIT_NO_CAP = 125
_POLL_S = 0.05
_STDERR_TAIL_CHARS = 4000
_CGROUP_PREFIX = "edgefleet-hardcap"
_CGROUP_EMPTY_WAIT_S = 5.0

# "$1" is where the cap is applied; the rest is the command to exec under it.
_JOIN_CGROUP_SCRIPT = 'echo $$ > "$1" || exit 125; shift; exec "$@"'
_SET_RLIMIT_SCRIPT = 'ulimit -v "$1" || exit 125; shift; exec "$@"'


class HardCapError(ValueError):
    """A capped run that cannot be set up: a bad cap, job or mechanism."""


class CapSetupError(HardCapError):
    """The cap could not be applied to the child."""


class CgroupError(CapSetupError):
    """No memory cgroup could be created or configured (names the path and the reason)."""


class JobError(HardCapError):
    """A job that cannot run: a malformed field, an unknown model, a schedule that does not fit."""


@dataclass(frozen=True)
class TrainJob:
    """What ``edgefleet.harness.train_child`` trains; ``from_dict`` checks the JSON form."""

    model: str
    image_size: int
    batch_size: int
    num_classes: int = 10
    schedule: tuple[str, ...] | None = None
    """Operations (``Fe_0``, ``Loss``, ``Bwd_0``...) on the split stages; None: plain autograd."""
    optimizer: str = Optimizer.SGD.value
    steps: int = 1
    seed: int = 0
    teacher: str | None = None

    def __post_init__(self) -> None:
        for name in ("model", "optimizer"):
            if not isinstance(getattr(self, name), str):
                raise JobError(f"job field {name!r} must be a string")
        for name in ("image_size", "batch_size", "num_classes", "steps"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise JobError(f"job field {name!r} must be a positive integer, got {value!r}")
        if not _is_int(self.seed):
            raise JobError(f"job field 'seed' must be an integer, got {self.seed!r}")
        if self.optimizer not in OPTIMIZERS:
            raise JobError(
                f"job field 'optimizer' must be one of {OPTIMIZERS}, got {self.optimizer!r}"
            )
        if self.teacher is not None and not isinstance(self.teacher, str):
            raise JobError(
                f"job field 'teacher' must be a model name or null, got {self.teacher!r}"
            )
        if self.schedule is not None and not all(isinstance(op, str) for op in self.schedule):
            raise JobError("job field 'schedule' must be null or a list of operation strings")

    @classmethod
    def from_dict(cls, data: object) -> TrainJob:
        if not isinstance(data, Mapping):
            raise JobError(f"a job is a JSON object, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise JobError(f"unknown job fields {unknown}; known: {sorted(known)}")
        missing = sorted({"model", "image_size", "batch_size"} - set(data))
        if missing:
            raise JobError(f"job fields {missing} are required")
        fields = dict(data)
        schedule = fields.get("schedule")
        if schedule is not None:
            if not isinstance(schedule, list | tuple):
                raise JobError("job field 'schedule' must be null or a list of operation strings")
            fields["schedule"] = tuple(schedule)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schedule"] = None if self.schedule is None else list(self.schedule)
        return data


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class CappedRun:
    """How a capped child run went.

    ``peak_rss_bytes`` is the child's own ``VmHWM`` figure when it reported one; for a child
    that died it is the largest the parent saw while sampling ``/proc/<pid>/status``, a lower
    bound (None if no sample was taken). ``cgroup_peak_bytes`` is the cgroup's own high-water
    mark (None under ``rlimit``, or with a cgroup v2 kernel older than ``memory.peak``).
    ``failure`` is None for a survivor, else ``oom_kill``, ``memory_error``, ``timeout`` or
    ``crashed`` (see ``stderr_tail``).
    """

    survived: bool
    cap_bytes: int
    cap_mechanism: str
    peak_rss_bytes: int | None
    cgroup_peak_bytes: int | None
    exit_code: int
    killed_by_oom: bool
    result: dict[str, Any] | None
    stderr_tail: str
    failure: str | None
    wall_s: float


def run_capped(
    job: TrainJob | Mapping[str, Any],
    cap_bytes: int,
    timeout_s: float,
    *,
    mechanism: Mechanism = "auto",
    python: str = sys.executable,
) -> CappedRun:
    """Train ``job`` in ``edgefleet.harness.train_child`` with its memory capped.

    ``mechanism="auto"`` takes a cgroup v1 memory controller, else cgroup v2's, else
    ``RLIMIT_AS``; naming one forces it (``CgroupError`` if it is not available). A child that
    runs out of memory or time is a result, not an error; ``JobError`` for a malformed job (before
    anything runs) or one the child rejects (an unknown model, a schedule for another chain).
    The cgroup is removed afterwards whatever happens.
    """
    _check_cap(cap_bytes)
    if not timeout_s > 0:
        raise HardCapError(f"timeout_s must be positive, got {timeout_s!r}")
    checked = job if isinstance(job, TrainJob) else TrainJob.from_dict(job)
    job_text = json.dumps(checked.to_dict())
    with (
        tempfile.TemporaryDirectory(prefix="edgefleet-hardcap-") as tmp,
        memory_cap(cap_bytes, mechanism) as cap,
    ):
        work = Path(tmp)
        job_path, result_path, log_path = work / "job.json", work / "result.json", work / "log"
        job_path.write_text(job_text)
        command = [python, "-m", _CHILD_MODULE, str(job_path), str(result_path)]
        exit_code, timed_out, sampled_peak, wall_s = _run_sampled(
            cap.wrapped(command), work, log_path, timeout_s
        )
        stderr_tail = _tail(log_path)
        if exit_code == _WRAPPER_EXIT_NO_CAP:
            error = CgroupError if cap.mechanism.startswith("cgroup") else CapSetupError
            raise error(f"the child could not apply its {cap.mechanism} cap: {stderr_tail}")
        result = _read_result(result_path)
        oom_kills = cap.oom_kills()
        cgroup_peak = cap.peak_bytes()
    if exit_code == _CHILD_EXIT_JOB_ERROR and result is not None:
        raise JobError(f"the child rejected the job: {result.get('message', stderr_tail)}")
    killed_by_oom = _killed_by_oom(exit_code, timed_out, oom_kills)
    failure = _failure(exit_code, timed_out, killed_by_oom, result)
    reported_peak = None if result is None else result.get("peak_rss_bytes")
    return CappedRun(
        survived=failure is None,
        cap_bytes=cap_bytes,
        cap_mechanism=cap.mechanism,
        peak_rss_bytes=reported_peak if isinstance(reported_peak, int) else sampled_peak,
        cgroup_peak_bytes=cgroup_peak,
        exit_code=exit_code,
        killed_by_oom=killed_by_oom,
        result=result,
        stderr_tail=stderr_tail,
        failure=failure,
        wall_s=wall_s,
    )


def available_mechanisms() -> list[Mechanism]:
    """The caps this machine can apply, best first (``rlimit`` always can)."""
    found: list[Mechanism] = []
    if _cgroup_v1_root() is not None:
        found.append("cgroup_v1")
    if _cgroup_v2_root() is not None:
        found.append("cgroup_v2")
    return [*found, "rlimit"]


def available_mechanism() -> Mechanism:
    """What ``mechanism="auto"`` picks on this machine."""
    return available_mechanisms()[0]


def _check_cap(cap_bytes: object) -> None:
    if not isinstance(cap_bytes, int) or isinstance(cap_bytes, bool):
        raise HardCapError(f"cap_bytes must be an integer number of bytes, got {cap_bytes!r}")
    if cap_bytes <= 0:
        raise HardCapError(f"cap_bytes must be positive, got {cap_bytes}")


def _killed_by_oom(exit_code: int, timed_out: bool, oom_kills: int | None) -> bool:
    if oom_kills is not None:
        return oom_kills > 0
    # Without the cgroup's counter, a SIGKILL the parent did not send is the OOM killer's.
    return exit_code == -signal.SIGKILL and not timed_out


def _failure(
    exit_code: int, timed_out: bool, killed_by_oom: bool, result: Mapping[str, Any] | None
) -> str | None:
    if killed_by_oom:
        return OOM_KILL
    if timed_out:
        return TIMEOUT
    if exit_code == _CHILD_EXIT_MEMORY_ERROR and result is not None:
        return MEMORY_ERROR
    if exit_code == 0 and result is not None and result.get("survived") is True:
        return None
    return CRASHED


def _run_sampled(
    command: Sequence[str], cwd: Path, log_path: Path, timeout_s: float
) -> tuple[int, bool, int | None, float]:
    """Run to the end or the timeout; exit code, whether it timed out, sampled peak RSS, wall."""
    env = dict(os.environ)
    # The child imports this package from where the parent found it, installed or not.
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    sampled_peak: int | None = None
    timed_out = False
    started = time.monotonic()
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        try:
            while True:
                try:
                    exit_code = child.wait(timeout=_POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                with contextlib.suppress(ProcessMemoryError):
                    # The child resets its high-water mark between phases: keep the largest.
                    sampled_peak = max(sampled_peak or 0, peak_rss_bytes(child.pid))
                if time.monotonic() - started > timeout_s:
                    timed_out = True
                    child.kill()
                    exit_code = child.wait()
                    break
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    return exit_code, timed_out, sampled_peak, time.monotonic() - started


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _tail(path: Path) -> str:
    try:
        text = path.read_bytes().decode(errors="replace")
    except OSError:
        return ""
    return text[-_STDERR_TAIL_CHARS:]


class MemoryCap(Protocol):
    mechanism: str

    def wrapped(self, command: Sequence[str]) -> list[str]:
        """``command`` run under the cap from its first instruction."""

    def peak_bytes(self) -> int | None: ...

    def oom_kills(self) -> int | None:
        """OOM kills the kernel counted, None where it keeps no count."""


@contextlib.contextmanager
def memory_cap(cap_bytes: int, mechanism: str = "auto") -> Iterator[MemoryCap]:
    """A memory cap for processes started with ``cap.wrapped(command)``, removed on exit.

    Long-running capped processes (the demo's boards) use it directly; ``run_capped`` runs one
    training child under it.
    """
    _check_cap(cap_bytes)
    if mechanism not in MECHANISMS:
        raise HardCapError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    chosen = available_mechanism() if mechanism == "auto" else mechanism
    if chosen == "rlimit":
        yield _RlimitCap(cap_bytes)
        return
    cgroup = _CgroupV1(cap_bytes) if chosen == "cgroup_v1" else _CgroupV2(cap_bytes)
    try:
        yield cgroup
    finally:
        cgroup.remove()


class _RlimitCap:
    mechanism = "rlimit"

    def __init__(self, cap_bytes: int) -> None:
        # ulimit -v counts KiB; rounding down keeps the limit within the cap.
        self._cap_kib = max(cap_bytes // 1024, 1)

    def wrapped(self, command: Sequence[str]) -> list[str]:
        return ["/bin/sh", "-c", _SET_RLIMIT_SCRIPT, "sh", str(self._cap_kib), *command]

    def peak_bytes(self) -> int | None:
        return None

    def oom_kills(self) -> int | None:
        return None


def _mount_points(fs_type: str) -> Iterator[tuple[Path, set[str]]]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[2] == fs_type:
            yield Path(fields[1]), set(fields[3].split(","))


def _cgroup_v1_root() -> Path | None:
    for path, options in _mount_points("cgroup"):
        if "memory" in options and os.access(path, os.W_OK):
            return path
    return None


def _cgroup_v2_root() -> Path | None:
    for path, _ in _mount_points("cgroup2"):
        try:
            controllers = (path / "cgroup.controllers").read_text().split()
        except OSError:
            continue
        if "memory" in controllers and os.access(path, os.W_OK):
            return path
    return None


class _Cgroup:
    """A fresh cgroup of our own, made under the controller's root and removed after the run."""

    mechanism = ""

    def __init__(self, root: Path | None) -> None:
        if root is None:
            raise CgroupError(f"no writable {self.mechanism} memory controller is mounted")
        self.path = root / f"{_CGROUP_PREFIX}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.path.mkdir()
        except OSError as error:
            raise CgroupError(f"cannot create the cgroup {self.path}: {error}") from error

    def wrapped(self, command: Sequence[str]) -> list[str]:
        procs = str(self.path / "cgroup.procs")
        return ["/bin/sh", "-c", _JOIN_CGROUP_SCRIPT, "sh", procs, *command]

    def _write(self, name: str, value: str) -> None:
        try:
            (self.path / name).write_text(value)
        except OSError as error:
            self.remove()
            raise CgroupError(f"cannot set {self.path / name} to {value}: {error}") from error

    def _read_int(self, name: str) -> int | None:
        try:
            return int((self.path / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _counter(self, name: str, key: str) -> int | None:
        """A ``key value`` line of a flat-keyed file (``memory.events``, ``memory.oom_control``)."""
        try:
            lines = (self.path / name).read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            fields = line.split()
            if len(fields) == 2 and fields[0] == key:
                return int(fields[1])
        return None

    def remove(self) -> None:
        """Kill what is left inside (descendants of our child only), then remove the cgroup."""
        if not self.path.exists():
            return
        deadline = time.monotonic() + _CGROUP_EMPTY_WAIT_S
        while True:
            pids = self._pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                self.path.rmdir()
                return
            except OSError as error:
                # A killed process leaves the cgroup a moment after its exit.
                if time.monotonic() > deadline:
                    raise CgroupError(f"cannot remove the cgroup {self.path}: {error}") from error
                time.sleep(_POLL_S)

    def _pids(self) -> list[int]:
        try:
            return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []


class _CgroupV1(_Cgroup):
    mechanism = "cgroup_v1"

    def __init__(self, cap_bytes: int) -> None:
        super().__init__(_cgroup_v1_root())
        self._write("memory.limit_in_bytes", str(cap_bytes))
        # memory+swap may not be below memory alone, so it is set second.
        if (self.path / "memory.memsw.limit_in_bytes").exists():
            self._write("memory.memsw.limit_in_bytes", str(cap_bytes))

    def peak_bytes(self) -> int | None:
        return self._read_int("memory.max_usage_in_bytes")

    def oom_kills(self) -> int | None:
        return self._counter("memory.oom_control", "oom_kill")


class _CgroupV2(_Cgroup):
    mechanism = "cgroup_v2"

    def __init__(self, cap_bytes: int) -> None:
        root = _cgroup_v2_root()
        if root is not None:
            _enable_memory_controller(root)
        super().__init__(root)
        self._write("memory.max", str(cap_bytes))
        if (self.path / "memory.swap.max").exists():
            self._write("memory.swap.max", "0")

    def peak_bytes(self) -> int | None:
        return self._read_int("memory.peak")

    def oom_kills(self) -> int | None:
        return self._counter("memory.events", "oom_kill")


def _enable_memory_controller(root: Path) -> None:
    """Children of ``root`` get ``memory.*`` files only once it delegates the controller."""
    subtree = root / "cgroup.subtree_control"
    try:
        if "memory" not in subtree.read_text().split():
            subtree.write_text("+memory")
    except OSError as error:
        raise CgroupError(f"cannot enable the memory controller in {subtree}: {error}") from error
