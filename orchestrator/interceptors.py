"""Server interceptors: errors from the catalog become gRPC statuses at one place, and the
operators' service checks its admin token at one place, before any work.

A ``FleetError`` aborts the call with its catalog status and public message; any other exception
is logged in full here and reaches the caller only as ``INTERNAL`` with a generic message.

A caller that goes away mid-call (it cancelled, or its deadline passed) is not an error of ours:
gRPC then raises ``grpc.RpcError`` out of the request stream a handler is reading (an upload's
chunks), or the stream simply ends (``CallCancelled`` then). That ends the call as
``CANCELLED``, logged in one line at INFO.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from orchestrator.errors import ERROR_DETAIL_KEY, ErrorCode, FleetError

_LOG = logging.getLogger(__name__)


class CallCancelled(grpc.RpcError):
    """A request stream ended because its caller went away, not because it was complete."""


def until_cancelled(messages: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    """``messages``, raising ``CallCancelled`` if they end on a call that is no longer active.

    gRPC may end a cancelled call's request stream as if the client had finished sending
    (which of its two events it handles first varies), and a handler would then judge a
    truncated upload. The check can only catch the cancellation once gRPC has seen it.
    """
    yield from messages
    if not context.is_active():
        raise CallCancelled()


def _guarded(behaviour: Callable[..., Any], method: str, streaming: bool) -> Callable[..., Any]:
    def fail(error: Exception, context: grpc.ServicerContext) -> None:
        if isinstance(error, grpc.RpcError) and not context.is_active():
            _LOG.info("%s: the client cancelled the call (or its deadline passed)", method)
            # The client is gone and gets nothing; the status is for the metrics interceptor,
            # and an aborted call is one gRPC ends without logging the exception.
            context.abort(grpc.StatusCode.CANCELLED, "the client cancelled the call")
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


class AdminInterceptor(BehaviourInterceptor):
    """Every call of ``service`` (the operators' ``JobsService``) shows the admin token before
    its handler runs, a request stream's first message unread (``check`` raises a
    ``FleetError``; the error interceptor outside this one turns it into the call's status)."""

    def __init__(self, service: str, check: Callable[[str], None]) -> None:
        super().__init__(self._checked)
        self._prefix = f"/{service}/"
        self._check = check

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        if not handler_call_details.method.startswith(self._prefix):
            return continuation(handler_call_details)
        return super().intercept_service(continuation, handler_call_details)

    def _checked(
        self, behaviour: Callable[..., Any], method: str, streaming: bool
    ) -> Callable[..., Any]:
        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            self._check(bearer_token(context, ErrorCode.BAD_ADMIN_TOKEN, "admin token"))
            return behaviour(request, context)

        return checked


_BEARER = "bearer "


def bearer_token(context: grpc.ServicerContext, missing: ErrorCode, what: str) -> str:
    """The call's ``authorization: Bearer <token>`` token; else ``FleetError(missing)``."""
    for key, value in context.invocation_metadata():
        if key == "authorization" and isinstance(value, str) and value.lower().startswith(_BEARER):
            return value[len(_BEARER) :]
    raise FleetError(missing, f"send 'authorization: Bearer <{what}>'")
