"""The two error shapes an endpoint can declare: OpenAI's and Anthropic's.

``body(err)`` is the JSON of an error response; ``event(err)`` is the SSE event
that ends a stream that broke after its first byte. OpenAI's is
``data: {"error": {"message", "type", "param", "code"}}`` (the openai SDK raises
it as an ``APIError``) with no ``[DONE]`` after it; Anthropic's is
``event: error`` with ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import msgspec

from gateway.errors import GatewayError
from gateway.sse_write import event as sse_event
from gateway.translate import messages as anthropic_shape
from gateway.wire.errors import ErrorBody, ErrorEnvelope

__all__ = ["ANTHROPIC", "OPENAI", "AnthropicErrors", "OpenAIErrors"]

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


OPENAI = OpenAIErrors()
ANTHROPIC = AnthropicErrors()
