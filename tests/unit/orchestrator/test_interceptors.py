from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from orchestrator.interceptors import CallCancelled, ErrorInterceptor, until_cancelled


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self, active: bool) -> None:
        self.active = active
        self.status: tuple[grpc.StatusCode, str] | None = None

    def is_active(self) -> bool:
        return self.active

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise Aborted

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass


def _guarded(behaviour: Any) -> Any:
    wrap = ErrorInterceptor()._wrap
    return wrap(behaviour, "UploadUpdate", False)


def _reads_a_cancelled_stream(request: Any, context: Any) -> None:
    list(until_cancelled(iter(["header", "chunk"]), context))


def test_a_stream_ending_on_a_cancelled_call_is_a_cancellation_logged_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator")
    context = FakeContext(active=False)

    with pytest.raises(Aborted):
        _guarded(_reads_a_cancelled_stream)(None, context)

    assert context.status is not None and context.status[0] is grpc.StatusCode.CANCELLED
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_the_same_failure_on_a_live_call_is_an_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fails(request: Any, context: Any) -> None:
        raise CallCancelled()

    context = FakeContext(active=True)

    with pytest.raises(Aborted):
        _guarded(fails)(None, context)

    assert context.status is not None and context.status[0] is grpc.StatusCode.INTERNAL
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


def test_a_complete_stream_on_a_live_call_passes_through() -> None:
    messages: Iterator[str] = until_cancelled(iter(["header", "chunk"]), FakeContext(True))

    assert list(messages) == ["header", "chunk"]
