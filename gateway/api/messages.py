"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's API in front of every provider.

What these endpoints declare; the pipeline (``pipeline/run.py``) does the rest.

* An Anthropic deployment (an adapter with the ``MessagesNative`` capability) gets
  the body as it came, only ``model`` replaced; the client's ``anthropic-version``
  and ``anthropic-beta`` are forwarded, never its key. Any other provider gets it
  translated to OpenAI chat (``translate/messages.py``) and then to its own format
  by its adapter; the answer comes back as Anthropic JSON or a valid Anthropic
  event sequence.
* Routing and the rate limiter size the request by its OpenAI-chat view.
* Errors have Anthropic's shape ``{"type":"error","error":{"type","message"}}``; a
  stream that breaks after its first byte ends with ``event: error``.
* Answers are cached like chat's (the ``message`` JSON, replayed as events to a
  streaming client).
* count_tokens is passed through to an Anthropic upstream; for other providers it
  is the gateway's own count of the translated request (``gateway.tokencount``),
  marked ``x-gateway-token-count: estimated``. It is neither cached nor rate limited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError
from gateway.pipeline.cache_replay_messages import MessageAssembler, message_frames
from gateway.pipeline.endpoint import Endpoint
from gateway.pipeline.shapes import ANTHROPIC
from gateway.tokencount import chat_estimate, count_chat_tokens
from gateway.translate.common import encode
from gateway.translate.messages import (
    chat_messages,
    chat_to_message,
    chat_tools,
    messages_to_chat,
)
from gateway.translate.messages_stream import AnthropicEventStream
from gateway.wire.anthropic import CountTokensRequest, MessagesRequest

if TYPE_CHECKING:
    import httpx

    from gateway.pipeline.context import RequestContext
    from gateway.providers.base import Deployment, MessagesNative, StreamTranslator
    from gateway.wire.chat import Usage

_FORWARDED = (b"anthropic-version", b"anthropic-beta")


def client_headers(ctx: RequestContext) -> dict[str, str]:
    """The Anthropic headers a passthrough forwards (never the client's key)."""
    assert ctx.scope is not None
    out: dict[str, str] = {}
    for k, v in ctx.scope["headers"]:
        if k in _FORWARDED and v:
            out.setdefault(k.decode(), v.decode("latin-1"))
    return out


def chat_view(ctx: RequestContext) -> dict[str, Any]:
    """The request as OpenAI chat, for sizing (made once per request); a request only
    Anthropic can take (server tools, say) is sized by its own fields instead."""
    view = ctx.view
    if view is None:
        try:
            view = messages_to_chat(ctx.body, ctx.stream, "openai")
        except GatewayError:
            body = ctx.body
            view = {"model": body.get("model"), "messages": []}
            view["max_tokens"] = body.get("max_tokens")
        ctx.view = view
    return view


class NativeExchange:
    """An Anthropic upstream: the body passes through."""

    def __init__(self, native: MessagesNative) -> None:
        self.native = native

    def request(self, dep: Deployment, ctx: RequestContext) -> httpx.Request:
        return self.native.messages_request(dep, ctx.body, ctx.stream, client_headers(ctx))

    def response(
        self, dep: Deployment, ctx: RequestContext, content: bytes
    ) -> tuple[bytes, Usage | None]:
        return self.native.messages_response(dep, content)

    def translator(self, dep: Deployment, ctx: RequestContext) -> StreamTranslator:
        return self.native.messages_stream(dep)


class TranslatedExchange:
    """Any other upstream: Anthropic -> OpenAI chat -> the adapter, and back."""

    def request(self, dep: Deployment, ctx: RequestContext) -> httpx.Request:
        chat = messages_to_chat(ctx.body, ctx.stream, dep.provider)
        return dep.adapter.chat_request(dep, chat, ctx.stream)

    def response(
        self, dep: Deployment, ctx: RequestContext, content: bytes
    ) -> tuple[bytes, Usage | None]:
        chat, usage = dep.adapter.chat_response(dep, content)
        return chat_to_message(chat, ctx.model, dep.provider), usage

    def translator(self, dep: Deployment, ctx: RequestContext) -> StreamTranslator:
        return AnthropicEventStream(dep.adapter.chat_stream(dep, True), ctx.model, dep.provider)


_TRANSLATED = TranslatedExchange()


def _exchange(dep: Deployment) -> NativeExchange | TranslatedExchange:
    native = dep.adapter.native_messages
    return _TRANSLATED if native is None else NativeExchange(native)


class Messages(Endpoint):
    name = "messages"
    path = "/v1/messages"
    request_type = MessagesRequest
    errors = ANTHROPIC
    cache_kind = "messages"
    streams = True

    def sizing(self, ctx: RequestContext) -> dict[str, Any]:
        return chat_view(ctx)

    def estimate(self, ctx: RequestContext, dep: Deployment, default_max: int) -> tuple[int, int]:
        return chat_estimate(chat_view(ctx), dep.model, default_max)

    def exchange(self, dep: Deployment) -> NativeExchange | TranslatedExchange:
        return _exchange(dep)

    def replay(self, body: bytes, ctx: RequestContext) -> bytes:
        return message_frames(body)

    def assembler(self) -> MessageAssembler:
        return MessageAssembler()


class CountExchange:
    def __init__(self, native: MessagesNative) -> None:
        self.native = native

    def request(self, dep: Deployment, ctx: RequestContext) -> httpx.Request:
        return self.native.count_tokens_request(dep, ctx.body, client_headers(ctx))

    def response(
        self, dep: Deployment, ctx: RequestContext, content: bytes
    ) -> tuple[bytes, Usage | None]:
        return content, None

    def translator(self, dep: Deployment, ctx: RequestContext) -> StreamTranslator:
        raise NotImplementedError("count_tokens is never streamed")


class CountTokens(Endpoint):
    name = "count_tokens"
    path = "/v1/messages/count_tokens"
    request_type = CountTokensRequest
    errors = ANTHROPIC
    limited = False

    def exchange(self, dep: Deployment) -> CountExchange:
        native = dep.adapter.native_messages
        assert native is not None  # ``local`` answers for every other provider
        return CountExchange(native)

    def local(self, ctx: RequestContext, dep: Deployment) -> bytes | None:
        if dep.adapter.native_messages is not None:
            return None
        # Not an Anthropic upstream: the gateway counts the request as it would send it.
        body = ctx.body
        n = count_chat_tokens(
            chat_messages(body, dep.provider), dep.model, chat_tools(body, dep.provider)
        )
        ctx.headers["x-gateway-token-count"] = "estimated"
        return encode({"input_tokens": n})


MESSAGES = Messages()
COUNT_TOKENS = CountTokens()
