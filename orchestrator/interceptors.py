"""Server interceptors: errors from the catalog become gRPC statuses at one place.

A ``FleetError`` aborts the call with its catalog status and public message; any other exception
is logged in full here and reaches the caller only as ``INTERNAL`` with a generic message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from orchestrator.errors import ErrorCode, FleetError

_LOG = logging.getLogger(__name__)


def _guarded(behaviour: Callable[..., Any], method: str, streaming: bool) -> Callable[..., Any]:
    def fail(error: Exception, context: grpc.ServicerContext) -> None:
        if isinstance(error, FleetError):
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


class ErrorInterceptor(grpc.ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_guarded(handler.unary_unary, method, False))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_guarded(handler.unary_stream, method, True))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=_guarded(handler.stream_unary, method, False))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=_guarded(handler.stream_stream, method, True))
        return handler
