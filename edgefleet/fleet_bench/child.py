"""Entry point of every process the fleet benchmarks start.

``python -m edgefleet.fleet_bench.child ROLE --parent-pid PID [ARGS...]``, where ROLE is

- ``coordinator``: ``edgefleet coordinator serve ARGS`` (the real command, tokens from the
  environment);
- ``update-client``: one simulated board of ``edgefleet bench aggregation``;
- ``api-client``: many simulated boards of ``edgefleet bench fleet-api``.

The child first ties its life to the bench process (``die_with_parent``). Ctrl-C reaches the
whole process group; the bench process stops its children itself, so a worker just exits.
"""

from __future__ import annotations

import sys

from edgefleet.fleet_bench.processes import die_with_parent

ROLES = ("coordinator", "update-client", "api-client")
_INTERRUPTED = 130


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in ROLES or argv[1] != "--parent-pid":
        sys.stderr.write(f"usage: child {{{','.join(ROLES)}}} --parent-pid PID [ARGS...]\n")
        return 2
    role, parent_pid, rest = argv[0], int(argv[2]), argv[3:]
    die_with_parent(parent_pid)
    if role == "coordinator":
        from edgefleet.cli import app

        app(["coordinator", "serve", *rest])
        return 0
    try:
        if role == "update-client":
            from edgefleet.fleet_bench.update_client import main as update_client

            return update_client(rest)
        from edgefleet.fleet_bench.api_client import main as api_client

        return api_client(rest)
    except KeyboardInterrupt:
        return _INTERRUPTED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
