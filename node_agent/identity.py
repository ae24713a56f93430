"""The node's identity on disk, so that a restarted agent is the same node.

``<data dir>/identity.json`` holds the node id, its credential and the coordinator it belongs
to; it is written atomically and readable only by its owner (the credential is a secret).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "identity.json"


@dataclass(frozen=True)
class Identity:
    node_id: str
    credential: str
    hardware_class: str
    coordinator: str


def load(data_dir: Path) -> Identity | None:
    path = data_dir / FILE_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return Identity(**{key: str(data[key]) for key in Identity.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is unreadable ({exc}); remove it to register again") from None


def save(data_dir: Path, identity: Identity) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / FILE_NAME
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        json.dump(asdict(identity), stream)
        stream.flush()
        os.fsync(stream.fileno())
    partial.replace(path)
