"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's API in front of every provider.

Reads top to bottom as the pipeline, like ``api/chat.py``:
1 parse and validate   body -> dict (forwarded or translated) + MessagesRequest (checked)
1 auth                 caller key (Bearer or x-api-key) -> Principal: 401/403
4 route                model -> group -> deployments in order
2 rate limit           reserve RPM+TPM, sized by the OpenAI view of the request
5 adapt                an Anthropic deployment gets the body as it came (``messages_request``:
                       only ``model`` replaced; the client's ``anthropic-version`` and
                       ``anthropic-beta`` forwarded, never its key); any other provider gets
                       it translated to OpenAI chat (``translate/messages.py``) and then to
                       its own format by its adapter
6 relay                the attempt loop: retries, fallbacks, breakers (as for chat);
                       whole body, or a stream committed at its first content event
7 settle               usage, latency and outcome -> metrics; the reservation settled

Answers come back as Anthropic JSON or a valid Anthropic event sequence. Errors use
Anthropic's shape ``{"type":"error","error":{"type","message"}}``; a stream that breaks
after its first byte ends with ``event: error``.

count_tokens is passed through to an Anthropic upstream; for other providers it is the
gateway's own count of the translated request (``gateway.tokencount``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
from litestar import Request, Response, post
from litestar.exceptions import HTTPException
from litestar.response import Stream

from gateway.api.body import decode_object, read_body, validate
from gateway.api.chat import _headers, unanswered
from gateway.api.handlers import http_exception_handler, internal_error_handler
from gateway.errors import GatewayError
from gateway.pipeline import attempts, relay, settle
from gateway.providers.base import Deployment, StreamTranslator
from gateway.state import Gateway
from gateway.telemetry import metrics
from gateway.tokencount import count_chat_tokens
from gateway.translate.common import encode
from gateway.translate.messages import (
    AnthropicEventStream,
    chat_messages,
    chat_to_message,
    chat_tools,
    error_body,
    error_event,
    messages_to_chat,
    status_error_type,
)
from gateway.wire.anthropic import CountTokensRequest, ErrorObject, ErrorResponse, MessagesRequest
from gateway.wire.chat import Usage

_JSON = "application/json"
_FORWARDED = ("anthropic-version", "anthropic-beta")


# -- errors in Anthropic's shape ----------------------------------------------------------


def _gateway_error(request: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    info: Any = request.scope.get("gw")
    if info is not None:
        info.error = exc.code or exc.type
    return Response(
        error_body(exc), status_code=exc.status, media_type=_JSON, headers=exc.headers or None
    )


def _reshaped(resp: Response[bytes]) -> Response[bytes]:
    """An OpenAI-shaped error response from the app's handlers, in Anthropic's shape."""
    try:
        message = msgspec.json.decode(resp.content)["error"]["message"]
    except (msgspec.DecodeError, KeyError, TypeError):
        message = "error"
    status = resp.status_code or 500
    etype = status_error_type(status)
    body = encode(ErrorResponse(error=ErrorObject(type=etype, message=message)))
    return Response(body, status_code=status, media_type=_JSON, headers=resp.headers)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    return _reshaped(http_exception_handler(request, exc))


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return _reshaped(internal_error_handler(request, exc))


_ERROR_HANDLERS: dict[Any, Any] = {
    GatewayError: _gateway_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}


def _client_headers(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {k: v for k in _FORWARDED if (v := request.headers.get(k))}


async def _anthropic_frames(r: relay.StreamRelay) -> AsyncIterator[bytes]:
    """The relay's frames, its closing error frame replaced by Anthropic's ``event: error``."""
    frames = r.frames()
    try:
        async for frame in frames:
            # The relay sets ``error`` just before it yields the frame that reports it.
            yield error_event(r.error) if r.error is not None else frame
    finally:
        aclose = getattr(frames, "aclose", None)
        if aclose is not None:
            await aclose()


# -- POST /v1/messages ----------------------------------------------------------------------


@post("/v1/messages", status_code=200, exception_handlers=_ERROR_HANDLERS)
async def messages(request: Request[Any, Any, Any]) -> Response[Any]:
    gw: Gateway = request.app.state.gw
    info = request.scope["gw"]  # type: ignore[typeddict-item]
    settings = gw.settings

    body = decode_object(await read_body(request, settings.max_body_bytes), settings.max_json_depth)
    req = validate(body, MessagesRequest)
    principal = gw.auth.authenticate(request, req.model, gw.registry.resolve)  # 1 auth
    group = gw.registry.resolve(req.model)
    info.model = group.label
    stream = bool(req.stream)
    client_headers = _client_headers(request)
    # The OpenAI-shaped view of the request: what non-Anthropic deployments are sent,
    # and what the router and the rate limiter size the request by.
    chat_view = _chat_view(body, stream)
    dep = attempts.first_choice(gw, group, chat_view, stream)  # 4 route
    info.provider = dep.provider
    lease = await gw.limiter.reserve(principal, group, dep, chat_view)  # 2 rate limit

    def build(d: Deployment) -> httpx.Request:  # 5 adapt, per deployment: groups may mix
        native = getattr(d.adapter, "messages_request", None)
        if native is not None:
            return native(d, body, stream, client_headers)  # type: ignore[no-any-return]
        return d.adapter.chat_request(d, messages_to_chat(body, stream, d.provider), stream)

    if not stream:

        def parse(d: Deployment, content: bytes) -> tuple[bytes, Usage | None]:
            if getattr(d.adapter, "messages_request", None) is not None:
                return d.adapter.messages_response(d, content)  # type: ignore[attr-defined,no-any-return]
            chat, usage = d.adapter.chat_response(d, content)
            return chat_to_message(chat, req.model, d.provider), usage

        t_sent = time.perf_counter()
        with unanswered(lease):
            served = await attempts.complete(
                gw, group, chat_view, build, parse, first=dep, info=info, lease=lease
            )
        dep, (out, usage) = served.dep, served.result
        upstream_s = time.perf_counter() - t_sent
        info.upstream_s = upstream_s
        settle.record_success(dep, upstream_s, usage)
        lease.settle(usage)
        overhead = time.perf_counter() - info.start - upstream_s
        headers = _headers(dep.provider, overhead, upstream_s)
        headers["x-gateway-attempts"] = str(served.attempts)
        lease.apply(headers)
        return Response(out, media_type=_JSON, headers=headers)

    def translator(d: Deployment) -> StreamTranslator:
        if getattr(d.adapter, "messages_request", None) is not None:
            return d.adapter.messages_stream(d)  # type: ignore[attr-defined,no-any-return]
        return AnthropicEventStream(d.adapter.chat_stream(d, True), req.model, d.provider)

    t_sent = time.perf_counter()

    on_close = settle.stream_closer(info, lease, t_sent)

    with unanswered(lease):
        streamed = await attempts.stream(
            gw, group, chat_view, build, translator, on_close, first=dep, info=info, lease=lease
        )
    dep, stream_relay, ttft = streamed.dep, streamed.result, streamed.ttft
    metrics.llm_time_to_first_token_seconds.labels(dep.provider, dep.label).observe(ttft)
    overhead = time.perf_counter() - info.start - ttft
    headers = _headers(dep.provider, overhead, ttft)
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"
    headers["x-gateway-attempts"] = str(streamed.attempts)
    lease.apply(headers)
    frames = lease.metered(_anthropic_frames(stream_relay))
    return Stream(frames, media_type="text/event-stream", headers=headers)


def _chat_view(body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The request as OpenAI chat, for sizing; a request only Anthropic can take
    (server tools, say) is sized by its own fields instead."""
    try:
        return messages_to_chat(body, stream, "openai")
    except GatewayError:
        return {
            "model": body.get("model"),
            "messages": [],
            "max_tokens": body.get("max_tokens"),
        }


# -- POST /v1/messages/count_tokens ---------------------------------------------------------


@post("/v1/messages/count_tokens", status_code=200, exception_handlers=_ERROR_HANDLERS)
async def count_tokens(request: Request[Any, Any, Any]) -> Response[bytes]:
    gw: Gateway = request.app.state.gw
    info = request.scope["gw"]  # type: ignore[typeddict-item]
    settings = gw.settings

    body = decode_object(await read_body(request, settings.max_body_bytes), settings.max_json_depth)
    req = validate(body, CountTokensRequest)
    gw.auth.authenticate(request, req.model, gw.registry.resolve)
    group = gw.registry.resolve(req.model)
    info.model = group.label
    dep = gw.router.plan(group)[0]
    info.provider = dep.provider
    passthrough = getattr(dep.adapter, "count_tokens_request", None)
    if passthrough is not None:
        t_sent = time.perf_counter()
        _resp, content = await relay.complete(dep, passthrough(dep, body, _client_headers(request)))
        info.upstream_s = time.perf_counter() - t_sent
        return Response(content, media_type=_JSON, headers={"x-gateway-provider": dep.provider})
    # Not an Anthropic upstream: the gateway counts the request as it would send it.
    n = count_chat_tokens(
        chat_messages(body, dep.provider), dep.model, chat_tools(body, dep.provider)
    )
    return Response(
        encode({"input_tokens": n}),
        media_type=_JSON,
        headers={"x-gateway-provider": dep.provider, "x-gateway-token-count": "estimated"},
    )


__all__ = ["count_tokens", "messages"]
