"""What the long-running commands (coordinator serve, agent run) share: logs and stopping."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType


def start_service() -> threading.Event:
    """Log at INFO to stderr; return an event that SIGTERM or SIGINT sets (a graceful stop)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop
