"""Server interceptors: errors from the catalog become gRPC statuses at one place.

A ``FleetError`` aborts the call with its catalog status and public message; any other exception
is logged in full here and reaches the caller only as ``INTERNAL`` with a generic message.

A caller that goes away mid-call (it cancelled, or its deadline passed) is not an error of ours:
gRPC then raises ``grpc.RpcError`` out of the request stream a handler is reading (an upload's
chunks). That ends the call as ``CANCELLED``, logged in one line at INFO.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from orchestrator.errors import ERROR_DETAIL_KEY, ErrorCode, FleetError

_LOG = logging.getLogger(__name__)


def _guarded(behaviour: Callable[..., Any], method: str, streaming: bool) -> Callable[..., Any]:
    def fail(error: Exception, context: grpc.ServicerContext) -> None:
        if isinstance(error, grpc.RpcError) and not context.is_active():
            _LOG.info("%s: the client cancelled the call (or its deadline passed)", method)
            # For the metrics interceptor outside this one; the client is gone and gets nothing.
            context.set_code(grpc.StatusCode.CANCELLED)
            # gRPC knows this very exception (it raised it) and ends the call without logging.
            raise error
        if isinstance(error, FleetError):
            detail = error.to_detail().SerializeToString()
            context.set_trailing_metadata(((ERROR_DETAIL_KEY, detail),))
            context.abort(error.status, error.public_message)
        _LOG.exception("unhandled error in %s", method)
        context.abort(ErrorCode.INTERNAL.status, ErrorCode.INTERNAL.public_message)

    if streaming:

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from behaviour(request, context)
            except Exception as error:
                fail(error, context)

        return stream

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behaviour(request, context)
        except Exception as error:
            fail(error, context)

    return unary


Wrap = Callable[[Callable[..., Any], str, bool], Callable[..., Any]]
"""``wrap(behaviour, method, streams_responses)`` -> the behaviour to run instead."""


class BehaviourInterceptor(grpc.ServerInterceptor):
    """An interceptor that wraps each method's behaviour, whatever its call shape."""

    def __init__(self, wrap: Wrap) -> None:
        self._wrap = wrap

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]
        for kind, streams_responses in (
            ("unary_unary", False),
            ("unary_stream", True),
            ("stream_unary", False),
            ("stream_stream", True),
        ):
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                return handler._replace(**{kind: self._wrap(behaviour, method, streams_responses)})
        return handler


class ErrorInterceptor(BehaviourInterceptor):
    def __init__(self) -> None:
        super().__init__(_guarded)
