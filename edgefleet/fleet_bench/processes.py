"""The processes a benchmark starts: tied to the bench process's life, stopped in ``finally``.

Every child runs ``python -m edgefleet.fleet_bench.child ROLE`` and first asks the kernel to
signal it when the bench process dies (``PR_SET_PDEATHSIG``), so even a bench killed with SIGKILL
leaves no coordinator or simulated board behind; ``ChildGroup`` stops the children it started
when its ``with`` block ends, however it ends (an error, Ctrl-C).

A worker talks to the bench process through its standard streams:

- stdout: one JSON object per line, ``{"event": "ready", ...}`` once it is set up and then
  ``{"event": "result", ...}``;
- stdin: one byte releases it into its timed part; end of file there dismisses it (the bench
  is done with it, or has gone), so that no worker exits while others are still being timed;
- stderr: a log file, read back only to explain a failure (a pipe nobody drains would block it).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

CHILD_MODULE = "edgefleet.fleet_bench.child"
_PR_SET_PDEATHSIG = 1
_STOP_GRACE_S = 10.0
_TAIL_CHARS = 3000
_READ_BYTES = 1 << 16


class BenchError(RuntimeError):
    """The benchmark could not run as designed (a child failed, an update was refused...)."""


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel send SIGTERM to this process when ``parent_pid`` (its parent) exits.

    The parent-death signal fires when the *thread* that started the child ends, so children
    are always started from the thread that runs the benchmark.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # The parent may have died before the request above was made: then nobody would signal us.
    if os.getppid() != parent_pid:
        raise SystemExit(f"the bench process {parent_pid} has gone")


def child_command(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", CHILD_MODULE, role, "--parent-pid", str(os.getpid()), *args]


def log_tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-_TAIL_CHARS:]


def stop_process(process: subprocess.Popen[bytes], grace_s: float = _STOP_GRACE_S) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_s``; always reaped."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _buffer: bytes = b""
    events: list[dict[str, object]] = field(default_factory=list)

    def describe_failure(self) -> str:
        status = self.process.poll()
        state = "still running" if status is None else f"exit status {status}"
        return f"{self.name} ({state}); its log ends:\n{log_tail(self.log_path)}"


def emit(event: str, **fields: object) -> None:
    """A worker's line to the bench process (flushed at once: the bench waits for it)."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def wait_for_release() -> bool:
    """Block until the bench releases this worker; False when it was dismissed instead."""
    return os.read(sys.stdin.fileno(), 1) != b""


def wait_until_dismissed() -> None:
    while os.read(sys.stdin.fileno(), 1):
        pass


class ChildGroup:
    """Workers started together, read together, released together, and always stopped."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self.children: list[Child] = []

    def __enter__(self) -> ChildGroup:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(
        self, name: str, role: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Child:
        log_path = self._log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                child_command(role, *args),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, **(env or {})},
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def wait_for(
        self,
        event: str,
        timeout_s: float,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[dict[str, object]]:
        """Each child's first ``event`` line, in child order; ``BenchError`` if one fails."""
        found: dict[int, dict[str, object]] = {}
        for index, child in enumerate(self.children):
            line = _first(child.events, event)
            if line is not None:
                found[index] = line
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            for index, child in enumerate(self.children):
                if index not in found:
                    assert child.process.stdout is not None, "started with a stdout pipe"
                    selector.register(child.process.stdout, selectors.EVENT_READ, index)
            while len(found) < len(self.children):
                if progress is not None:
                    progress(len(found), len(self.children))
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    late = [c for i, c in enumerate(self.children) if i not in found]
                    raise BenchError(
                        f"{len(late)} of {len(self.children)} workers sent no {event!r} within "
                        f"{timeout_s:.0f} s; the first: {late[0].describe_failure()}"
                    )
                for key, _ in selector.select(min(left_s, 1.0)):
                    index = key.data
                    child = self.children[index]
                    stream: IO[bytes] = key.fileobj  # type: ignore[assignment]
                    if not _read_lines(child, stream):
                        selector.unregister(stream)
                        if _first(child.events, event) is None:
                            raise BenchError(
                                f"worker {child.describe_failure()}\n(no {event!r} line before "
                                "its output ended)"
                            )
                    line = _first(child.events, event)
                    if line is not None and index not in found:
                        found[index] = line
                        with contextlib.suppress(KeyError):
                            selector.unregister(stream)
        if progress is not None:
            progress(len(found), len(self.children))
        return [found[index] for index in range(len(self.children))]

    def release(self) -> None:
        """Write every worker its release byte, back to back (microseconds apart)."""
        for child in self.children:
            assert child.process.stdin is not None, "started with a stdin pipe"
            # A worker that died since it said it was ready is reported when its result is due.
            with contextlib.suppress(BrokenPipeError):
                child.process.stdin.write(b"g")
                child.process.stdin.flush()

    def dismiss(self) -> None:
        """Let every worker exit (end of file on its stdin)."""
        for child in self.children:
            if child.process.stdin is not None:
                with contextlib.suppress(OSError):
                    child.process.stdin.close()

    def stop(self) -> None:
        self.dismiss()
        # Signal every child first and wait after, so the grace periods overlap.
        for child in self.children:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.terminate()
        deadline = time.monotonic() + _STOP_GRACE_S
        for child in self.children:
            try:
                child.process.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                child.process.wait()
            if child.process.stdout is not None:
                with contextlib.suppress(OSError):
                    child.process.stdout.close()


def _first(events: list[dict[str, object]], event: str) -> dict[str, object] | None:
    return next((line for line in events if line.get("event") == event), None)


def _read_lines(child: Child, stream: IO[bytes]) -> bool:
    """Parse what ``stream`` holds now into ``child.events``; False at end of file."""
    data = os.read(stream.fileno(), _READ_BYTES)
    if not data:
        return False
    child._buffer += data
    *lines, child._buffer = child._buffer.split(b"\n")
    for raw in lines:
        if not raw.strip():
            continue
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            raise BenchError(
                f"worker {child.name} wrote a line that is not JSON: {raw[:200]!r}"
            ) from None
        if isinstance(parsed, dict):
            child.events.append(parsed)
    return True
