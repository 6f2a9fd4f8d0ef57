"""OpenAI and any OpenAI-compatible upstream: requests and answers pass through.

The body the client sent is forwarded with only ``model`` replaced (and, for
streams, ``stream_options.include_usage`` forced on so the gateway can count
tokens); responses are relayed byte for byte. Streams are parsed to find usage,
errors and the end, and each event's JSON is relayed as it came, on one ``data:``
line; the usage-only chunk is dropped when the client did not ask for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import msgspec

from gateway.errors import (
    GatewayError,
    UpstreamStatus,
    UpstreamUnavailable,
)
from gateway.pipeline.retry_after import client_hints
from gateway.providers.base import Deployment, MessagesNative, ModelLister, ResponsesNative
from gateway.providers.transport import cached_head, post
from gateway.sse_write import DONE as DONE_FRAME
from gateway.sse_write import json_event
from gateway.translate.responses_passthrough import ResponsesPassthroughStream, passthrough_usage
from gateway.translate.upstream import SSEStream, bad_event, ended_early
from gateway.wire.chat import Usage, UsageView
from gateway.wire.errors import UpstreamErrorView

_encode = msgspec.json.Encoder().encode
_usage_decoder = msgspec.json.Decoder(UsageView)
_error_decoder = msgspec.json.Decoder(UpstreamErrorView)


class _ChoiceView(msgspec.Struct, gc=False):
    finish_reason: str | None = None


class _ChunkView(msgspec.Struct, gc=False):
    choices: list[_ChoiceView] | None = None
    usage: Usage | None = None
    error: msgspec.Raw = msgspec.Raw()  # empty unless the event carries an error


_chunk_decoder = msgspec.json.Decoder(_ChunkView)
# Headers worth passing back to the client from an error response.
RETRY_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")


class OpenAIStream(SSEStream):
    """Relays OpenAI chunks, keeping usage and watching for errors and [DONE]."""

    __slots__ = ("_finished", "_include_usage")

    def __init__(self, provider: str, include_usage: bool) -> None:
        super().__init__(provider)
        self._include_usage = include_usage
        self._finished = False  # a choice carried finish_reason

    def _event(self, _etype: str, data: str, frames: list[bytes]) -> None:
        if data == "[DONE]":
            self.done = True
            frames.append(DONE_FRAME)
            return
        try:  # decode_event, inline: this runs once per relayed chunk
            view = _chunk_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise bad_event(self._provider) from None
        if view.error:
            raise stream_error(self._provider, view.error)
        if view.choices:
            for c in view.choices:
                if c.finish_reason is not None:
                    self._finished = True
        if view.usage is not None:
            self.usage = view.usage
            if not view.choices and not self._include_usage:
                return  # the usage-only chunk the client did not ask for
        frames.append(json_event(data))

    def _end_of_body(self) -> list[bytes]:
        if self.done:
            return []
        if self._finished:
            # Some OpenAI-compatible servers end without [DONE] after a proper finish.
            self.done = True
            return [DONE_FRAME]
        raise ended_early(self._provider, "it was complete")


def stream_error(provider: str, raw: msgspec.Raw) -> GatewayError:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    return UpstreamStatus(
        f"provider {provider} failed mid-stream: {message or 'error event'}",
        provider=provider,
        upstream_status=502,
        type=(body.get("type") if isinstance(body, dict) else None) or "upstream_error",
    )


class OpenAIAdapter:
    """Speaks OpenAI's wire format; also used by the ``mock`` provider (which serves chat
    only, so its ``/v1/responses`` is translated)."""

    native_messages: MessagesNative | None = None  # /v1/messages is translated to chat

    def __init__(self, name: str = "openai") -> None:
        self.name = name
        self.lister: ModelLister | None = self
        self.native_responses: ResponsesNative | None = self if name != "mock" else None

    def prepare(self, dep: Deployment) -> None:
        base = dep.base_url.rstrip("/")
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
        ]
        if dep.api_key is not None:
            headers.append((b"authorization", b"Bearer " + dep.api_key.reveal().encode()))
        ext: dict[str, Any] = {"timeout": dep.timeouts.extension()}
        if dep.mock is not None:
            ext["mock"] = dep.mock
        dep.cache.update(
            chat_url=httpx.URL(base + "/chat/completions"),
            embeddings_url=httpx.URL(base + "/embeddings"),
            responses_url=httpx.URL(base + "/responses"),
            models_url=httpx.URL(base + "/models"),
            headers=headers,
            extensions=ext,
        )

    def _request(self, dep: Deployment, url_key: str, body: dict[str, Any]) -> httpx.Request:
        c = dep.cache
        url: httpx.URL = c[url_key]
        return post(url, cached_head(c, url_key), _encode(body), c["extensions"])

    def chat_request(self, dep: Deployment, body: dict[str, Any], stream: bool) -> httpx.Request:
        out = {**body, "model": dep.model}
        if stream:
            opts = body.get("stream_options")
            out["stream_options"] = (
                {**opts, "include_usage": True} if opts else {"include_usage": True}
            )
        return self._request(dep, "chat_url", out)

    def chat_response(self, dep: Deployment, content: bytes) -> tuple[bytes, Usage | None]:
        return content, self._usage(dep, content)

    def chat_stream(self, dep: Deployment, include_usage: bool) -> OpenAIStream:
        return OpenAIStream(self.name, include_usage)

    def embeddings_request(self, dep: Deployment, body: dict[str, Any]) -> httpx.Request:
        return self._request(dep, "embeddings_url", {**body, "model": dep.model})

    # -- ResponsesNative: /v1/responses passed through -----------------------------------

    def serves_responses(self, dep: Deployment) -> bool:
        return True

    def responses_request(
        self, dep: Deployment, body: dict[str, Any], stream: bool
    ) -> httpx.Request:
        return self._request(dep, "responses_url", {**body, "model": dep.model})

    def responses_response(self, dep: Deployment, content: bytes) -> tuple[bytes, Usage | None]:
        return content, passthrough_usage(self.name, content)

    def responses_stream(self, dep: Deployment) -> ResponsesPassthroughStream:
        return ResponsesPassthroughStream(self.name)

    def embeddings_response(
        self, dep: Deployment, body: dict[str, Any], content: bytes
    ) -> tuple[bytes, Usage | None]:
        return content, self._usage(dep, content)

    def models_request(self, dep: Deployment) -> httpx.Request:
        c = dep.cache
        return httpx.Request(
            "GET", c["models_url"], headers=c["headers"], extensions=c["extensions"]
        )

    def models_response(self, dep: Deployment, content: bytes) -> bytes:
        return content  # already OpenAI's shape

    def _usage(self, dep: Deployment, content: bytes) -> Usage | None:
        try:
            return _usage_decoder.decode(content).usage
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise UpstreamUnavailable(
                f"provider {self.name} returned a body that is not valid JSON", provider=self.name
            ) from None

    def map_error(
        self, dep: Deployment, status: int, headers: Mapping[str, str], content: bytes
    ) -> GatewayError:
        return map_openai_error(self.name, status, headers, content)


def map_openai_error(
    provider: str, status: int, headers: Mapping[str, str], content: bytes
) -> GatewayError:
    """An OpenAI-shaped upstream error as the client should see it."""
    message, etype, param, code = "", None, None, None
    try:
        view = _error_decoder.decode(content)
        if isinstance(view.error, str):
            message = view.error
        elif view.error is not None:
            message, etype, param, code = (
                view.error.message,
                view.error.type,
                view.error.param,
                view.error.code,
            )
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    message = message[:1000] if message else f"status {status}"
    if status == 429:
        return _rate_limited(provider, message, client_hints(headers), code)
    keep = {k: headers[k] for k in RETRY_HEADERS if k in headers}
    if status in (401, 403):
        # The gateway's own credentials were refused: the client can't fix that.
        return UpstreamStatus(
            f"provider {provider} rejected the gateway's credentials (status {status})",
            provider=provider,
            upstream_status=status,
            code="upstream_auth_failed",
        )
    if 400 <= status < 500:
        return UpstreamStatus(
            message,
            provider=provider,
            upstream_status=status,
            status=status,
            type=etype or "invalid_request_error",
            param=param,
            code=str(code) if code is not None else None,
        )
    return UpstreamStatus(
        f"provider {provider} failed with status {status}: {message}",
        provider=provider,
        upstream_status=status,
        headers=keep,
    )


def _rate_limited(
    provider: str, message: str, headers: dict[str, str], code: object
) -> GatewayError:
    return UpstreamStatus(
        f"provider {provider} is rate limiting: {message}",
        provider=provider,
        upstream_status=429,
        status=429,
        type="rate_limit_error",
        code=str(code) if code else "rate_limit_exceeded",
        headers=headers,
    )


__all__ = ["DONE_FRAME", "OpenAIAdapter", "OpenAIStream", "map_openai_error"]
