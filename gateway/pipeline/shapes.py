"""The error shapes an endpoint can declare: OpenAI's, Anthropic's, and OpenAI Responses'.

``body(err)`` is the JSON of an error response; ``event(err)`` is the SSE event
that ends a stream that broke after its first byte. OpenAI's is
``data: {"error": {"message", "type", "param", "code"}}`` (the openai SDK raises
it as an ``APIError``) with no ``[DONE]`` after it; Anthropic's is
``event: error`` with ``{"type": "error", "error": {"type", "message"}}``.
``/v1/responses`` answers errors as OpenAI does; its streams end with the
Responses ``error`` event and ``response.failed`` (never ``response.completed``),
numbered after the last event the client got: the stage ``remember`` binds
``event`` to the stream's ``ResponsesAssembler``; unbound, it starts with a
``response.created`` of its own.
"""

from __future__ import annotations

import msgspec

from gateway.errors import GatewayError
from gateway.sse_write import event as sse_event
from gateway.translate import messages as anthropic_shape
from gateway.translate.responses_events import failure_frames
from gateway.wire.errors import ErrorBody, ErrorEnvelope

__all__ = ["ANTHROPIC", "OPENAI", "RESPONSES", "AnthropicErrors", "OpenAIErrors", "ResponsesErrors"]

_encode = msgspec.json.Encoder().encode


class OpenAIErrors:
    def body(self, err: GatewayError) -> bytes:
        return _encode(ErrorEnvelope(ErrorBody(err.message, err.type, err.param, err.code)))

    def event(self, err: GatewayError) -> bytes:
        return sse_event(self.body(err))


class AnthropicErrors:
    def body(self, err: GatewayError) -> bytes:
        return anthropic_shape.error_body(err)

    def event(self, err: GatewayError) -> bytes:
        return anthropic_shape.error_event(err)


class ResponsesErrors(OpenAIErrors):
    def event(self, err: GatewayError) -> bytes:
        return failure_frames(err, None, [], -1)


OPENAI = OpenAIErrors()
ANTHROPIC = AnthropicErrors()
RESPONSES = ResponsesErrors()
