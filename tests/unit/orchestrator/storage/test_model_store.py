"""The content-addressed model store: round trips, digests checked, never a partial file."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save

from orchestrator.storage import BlobNotFound, DigestMismatch, ModelStore


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def test_bytes_go_in_and_come_out_under_their_sha256(store: ModelStore) -> None:
    data = os.urandom(300_000)

    digest = store.put(data)

    assert digest == hashlib.sha256(data).hexdigest()
    assert store.exists(digest)
    assert store.get(digest) == data
    assert store.size_bytes(digest) == len(data)
    assert store.path(digest) == store.root / "objects" / digest[:2] / digest
    assert store.verify(digest)


def test_chunks_in_give_the_same_file_and_chunks_out_are_bounded(store: ModelStore) -> None:
    data = os.urandom(250_000)
    chunks_in = [data[start : start + 65_536] for start in range(0, len(data), 65_536)]

    digest = store.put(iter(chunks_in))
    chunks_out = list(store.iter_chunks(digest, chunk_bytes=100_000))

    assert digest == store.put(data)
    assert [len(chunk) for chunk in chunks_out] == [100_000, 100_000, 50_000]
    assert b"".join(chunks_out) == data
    assert len(_files(store.root / "objects")) == 1


def test_a_safetensors_file_stored_is_readable_by_safetensors(store: ModelStore) -> None:
    weights = {"conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4)}

    digest = store.put(save(weights))

    with safe_open(str(store.path(digest)), framework="numpy") as stored:
        np.testing.assert_array_equal(stored.get_tensor("conv.weight"), weights["conv.weight"])


def test_bytes_that_do_not_match_the_announced_digest_are_refused(store: ModelStore) -> None:
    data = b"an update corrupted on the way"
    announced = hashlib.sha256(b"the update that was sent").hexdigest()

    with pytest.raises(DigestMismatch):
        store.put(data, expected_digest=announced)

    assert not store.exists(announced)
    assert not store.exists(hashlib.sha256(data).hexdigest())
    assert _files(store.root) == []


def test_verify_detects_a_stored_file_that_changed(store: ModelStore) -> None:
    digest = store.put(b"\x00" * 4096)
    path = store.path(digest)
    path.chmod(0o644)
    with path.open("r+b") as stored:
        stored.seek(100)
        stored.write(b"\x01")

    assert not store.verify(digest)


def test_no_partial_file_is_ever_visible(store: ModelStore) -> None:
    first, second = os.urandom(1000), os.urandom(1000)
    whole_digest = hashlib.sha256(first + second).hexdigest()
    seen_mid_write: list[bool] = []

    def interrupted_upload() -> Iterator[bytes]:
        yield first
        # Half the bytes are written: nothing may be visible under any name yet.
        seen_mid_write.append(store.exists(whole_digest))
        seen_mid_write.append(bool(_files(store.root / "objects")))
        yield second
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.put(interrupted_upload())

    assert seen_mid_write == [False, False]
    assert not store.exists(whole_digest)
    assert _files(store.root) == []


def test_stored_files_are_read_only(store: ModelStore) -> None:
    digest = store.put(b"weights")

    assert store.path(digest).stat().st_mode & 0o222 == 0


def test_an_absent_digest_is_not_found(store: ModelStore) -> None:
    absent = "0" * 64

    assert not store.exists(absent)
    with pytest.raises(BlobNotFound):
        store.get(absent)
    with pytest.raises(BlobNotFound):
        store.path(absent)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "a" * 63, ""])
def test_a_string_that_is_not_a_digest_is_refused(store: ModelStore, bad: str) -> None:
    with pytest.raises(ValueError, match="digest"):
        store.exists(bad)
