"""The library a model is built with, loaded when a task first needs it, and what it cost.

The runtime baseline leaves torchvision out (``node_agent.runtime``): a board training only
models built without it never loads it. A board that profiles a torchvision model loads it then,
measures what the import added to its private memory (87 MB anonymous on x86-64 with torch
2.14.1) and reports it with the profile; the coordinator adds it to every plan of a class whose
models need it.
"""

from __future__ import annotations

import importlib
import logging
import sys

from checkpointing.execution.models import is_torchvision_model
from checkpointing.execution.process_memory import resident_memory

_LOG = logging.getLogger(__name__)
_TORCHVISION = "torchvision"
_measured: dict[str, int] = {}
"""What each library cost when this process imported it."""


def _private_bytes() -> int:
    now = resident_memory()
    return now.rss_anon_bytes + now.rss_shmem_bytes


def load_model_library(model_name: str) -> int:
    """Import the library ``model_name`` is built with; its measured cost in bytes (0 for models
    built without one)."""
    if not is_torchvision_model(model_name):
        return 0
    if _TORCHVISION not in _measured:
        if _TORCHVISION in sys.modules:
            # Loaded before this process could measure it (a test run, a bench): its cost is
            # in the baseline already.
            _LOG.warning("%s was loaded before its cost could be measured", _TORCHVISION)
            _measured[_TORCHVISION] = 0
        else:
            before = _private_bytes()
            importlib.import_module(_TORCHVISION)
            _measured[_TORCHVISION] = max(_private_bytes() - before, 0)
            _LOG.info("%s loaded: %d bytes", _TORCHVISION, _measured[_TORCHVISION])
    return _measured[_TORCHVISION]
