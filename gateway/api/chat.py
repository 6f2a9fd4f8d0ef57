"""POST /v1/chat/completions: what the chat endpoint declares; the pipeline does the rest.

The body is validated as a ``ChatRequest`` and forwarded from the decoded dict
(unknown fields still reach the provider); every adapter speaks chat natively or
translates it. Errors have OpenAI's shape. Streamed and plain answers share one
cache entry (a ``chat.completion``), replayed as chunks to a streaming client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.pipeline.cache_replay import StreamAssembler, completion_frames
from gateway.pipeline.endpoint import Endpoint
from gateway.pipeline.shapes import OPENAI
from gateway.tokencount import chat_estimate
from gateway.wire.chat import ChatRequest

if TYPE_CHECKING:
    import httpx

    from gateway.pipeline.context import RequestContext
    from gateway.providers.base import Deployment, StreamTranslator
    from gateway.wire.chat import Usage


def include_usage(ctx: RequestContext) -> bool:
    """Did the client ask for the usage chunk? Read from the body that is forwarded (a
    plugin may have rewritten it after parsing)."""
    opts = ctx.body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


class ChatExchange:
    def request(self, dep: Deployment, ctx: RequestContext) -> httpx.Request:
        return dep.adapter.chat_request(dep, ctx.body, ctx.stream)

    def response(
        self, dep: Deployment, ctx: RequestContext, content: bytes
    ) -> tuple[bytes, Usage | None]:
        return dep.adapter.chat_response(dep, content)

    def translator(self, dep: Deployment, ctx: RequestContext) -> StreamTranslator:
        return dep.adapter.chat_stream(dep, include_usage(ctx))


_EXCHANGE = ChatExchange()


class Chat(Endpoint):
    name = "chat"
    path = "/v1/chat/completions"
    request_type = ChatRequest
    errors = OPENAI
    cache_kind = "chat"
    streams = True

    def estimate(self, ctx: RequestContext, dep: Deployment, default_max: int) -> tuple[int, int]:
        return chat_estimate(ctx.body, dep.model, default_max)

    def exchange(self, dep: Deployment) -> ChatExchange:
        return _EXCHANGE

    def replay(self, body: bytes, ctx: RequestContext) -> bytes:
        return completion_frames(body, include_usage(ctx))

    def assembler(self) -> Any:
        return StreamAssembler()


CHAT = Chat()
