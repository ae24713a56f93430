"""The outbox keeps a computed update on disk until the coordinator has answered for it."""

from __future__ import annotations

from pathlib import Path

from node_agent.outbox import Outbox, PendingUpdate


def _update(task_id: str) -> PendingUpdate:
    return PendingUpdate(task_id, "job-1", 3, 64, 900_000_000, 0.25, 12.5)


def test_an_update_survives_a_restart_until_it_is_removed(tmp_path: Path) -> None:
    Outbox(tmp_path).put(_update("train-7"), b"weights-7")

    reopened = Outbox(tmp_path)
    before = list(reopened.pending())
    reopened.remove("train-7")
    after = list(Outbox(tmp_path).pending())

    assert before == [(_update("train-7"), b"weights-7")]
    assert after == []


def test_a_task_id_cannot_write_outside_the_outbox(tmp_path: Path) -> None:
    hostile = "../../etc/passwd"

    Outbox(tmp_path).put(_update(hostile), b"x")

    written = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*.*"))
    assert all(path.startswith("outbox/") for path in written)
    assert [update.task_id for update, _ in Outbox(tmp_path).pending()] == [hostile]


def test_a_file_without_its_header_is_not_pending(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    (tmp_path / "outbox" / "train-9.safetensors").write_bytes(b"half written")

    assert list(outbox.pending()) == []
