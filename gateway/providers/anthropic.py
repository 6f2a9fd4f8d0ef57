"""Anthropic Messages API (``POST /v1/messages``, ``x-api-key``, ``anthropic-version``).

Two ways in:
- OpenAI chat: ``chat_request`` translates (``gateway/translate/anthropic.py``),
  ``chat_response``/``chat_stream`` translate the answer back.
- Anthropic-native ``/v1/messages``: ``messages_request`` passes the client's body
  through with only ``model`` replaced, forwarding the client's ``anthropic-version``
  and ``anthropic-beta`` (never its key); ``messages_stream`` relays the events
  as they are while watching usage, errors and ``message_stop``.
  ``count_tokens_request`` does the same for ``/v1/messages/count_tokens``.

Errors keep Anthropic's own ``error.type``; 529 ``overloaded_error`` becomes a 503,
upstream 401/403 a 502 (the gateway's key was refused, not the client's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import msgspec

from gateway.errors import GatewayError, UpstreamStatus
from gateway.pipeline.retry_after import client_hints
from gateway.providers.base import Deployment, MessagesNative, ModelLister, ResponsesNative
from gateway.providers.openai import RETRY_HEADERS
from gateway.providers.transport import cached_head, head, post
from gateway.sse_write import json_event
from gateway.translate import anthropic as tr
from gateway.translate.common import encode, scrub, unsupported
from gateway.translate.upstream import (
    SSEStream,
    auth_failed,
    decode_body,
    decode_event,
    ended_early,
    rate_limited,
    request_rejected,
    upstream_failed,
)
from gateway.wire.anthropic import ErrorView, EventView, ModelListView, UsageView
from gateway.wire.chat import Usage

PROVIDER = "anthropic"
API_VERSION = "2023-06-01"
_error_decoder = msgspec.json.Decoder(ErrorView)
_event_decoder = msgspec.json.Decoder(EventView)
_models_decoder = msgspec.json.Decoder(ModelListView)
_FORWARDED = ("anthropic-version", "anthropic-beta")
_MAX_HEADER = 1024


def _api_root(base: str) -> str:
    """The operator's base URL without a trailing ``/v1`` (both spellings are common)."""
    base = base.rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


def _clean_header(value: str) -> str | None:
    # Forwarded client headers must be short printable ASCII: nothing else is a version.
    if 0 < len(value) <= _MAX_HEADER and value.isascii() and value.isprintable():
        return value
    return None


class PassthroughStream(SSEStream):
    """Anthropic SSE relayed as Anthropic SSE (``/v1/messages`` to an Anthropic upstream).

    Events are re-framed one by one (``event: <type>`` + one ``data:`` line), so the
    client only ever sees whole events; an ``error`` event ends the stream, a body
    that ends before ``message_stop`` makes ``finish()`` raise.
    """

    __slots__ = ("_u",)

    def __init__(self) -> None:
        super().__init__(PROVIDER)
        self._u = UsageView()

    def _event(self, etype: str, data: str, frames: list[bytes]) -> None:
        ev = decode_event(_event_decoder, data, PROVIDER)
        if ev.type == "error":
            raise tr.stream_error(ev.error)
        if ev.type == "message_start" and ev.message is not None:
            self._merge(ev.message.usage)
        elif ev.type == "message_delta":
            self._merge(ev.usage)
        elif ev.type == "message_stop":
            self.done = True
        frames.append(json_event(data, ev.type if etype == "message" else etype))

    def _merge(self, u: UsageView | None) -> None:
        if tr.merge_usage(self._u, u):
            self.usage = tr.usage_from(self._u)

    def _end_of_body(self) -> list[bytes]:
        if self.done:
            return []
        raise ended_early(PROVIDER, "message_stop")


class AnthropicAdapter:
    name = PROVIDER

    def __init__(self) -> None:
        self.native_messages: MessagesNative | None = self
        self.native_responses: ResponsesNative | None = None  # translated via chat
        self.lister: ModelLister | None = self

    def prepare(self, dep: Deployment) -> None:
        root = _api_root(dep.base_url)
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
            (b"anthropic-version", API_VERSION.encode()),
        ]
        if dep.api_key is not None:
            headers.append((b"x-api-key", dep.api_key.reveal().encode()))
        dep.cache.update(
            chat_url=httpx.URL(root + "/v1/messages"),
            count_url=httpx.URL(root + "/v1/messages/count_tokens"),
            models_url=httpx.URL(root + "/v1/models", params={"limit": "1000"}),
            headers=headers,
            extensions={"timeout": dep.timeouts.extension()},
        )

    def _post(
        self, dep: Deployment, url_key: str, body: dict[str, Any], headers: Any = None
    ) -> httpx.Request:
        c = dep.cache
        url = c[url_key]
        h = head(url, headers) if headers else cached_head(c, url_key)
        return post(url, h, encode(body), c["extensions"])

    # -- OpenAI chat ----------------------------------------------------------------------

    def chat_request(self, dep: Deployment, body: dict[str, Any], stream: bool) -> httpx.Request:
        return self._post(dep, "chat_url", tr.chat_to_anthropic(body, dep.model, stream))

    def chat_response(self, dep: Deployment, content: bytes) -> tuple[bytes, Usage | None]:
        return tr.anthropic_to_chat(content)

    def chat_stream(self, dep: Deployment, include_usage: bool) -> tr.AnthropicStream:
        return tr.AnthropicStream(include_usage)

    def embeddings_request(self, dep: Deployment, body: dict[str, Any]) -> httpx.Request:
        raise unsupported("model", PROVIDER, "Anthropic has no embeddings API")

    def embeddings_response(
        self, dep: Deployment, body: dict[str, Any], content: bytes
    ) -> tuple[bytes, Usage | None]:
        raise unsupported("model", PROVIDER, "Anthropic has no embeddings API")

    # -- Anthropic-native /v1/messages (the MessagesNative capability) -------------------

    def _native_headers(
        self, dep: Deployment, client_headers: dict[str, str]
    ) -> list[tuple[bytes, bytes]]:
        headers = [h for h in dep.cache["headers"] if h[0] != b"anthropic-version"]
        headers.append((b"anthropic-version", API_VERSION.encode()))
        for name in _FORWARDED:
            value = client_headers.get(name)
            clean = _clean_header(value) if value else None
            if clean is not None:
                if name == "anthropic-version":
                    headers[-1] = (b"anthropic-version", clean.encode())
                else:
                    headers.append((name.encode(), clean.encode()))
        return headers

    def messages_request(
        self,
        dep: Deployment,
        body: dict[str, Any],
        stream: bool,
        client_headers: dict[str, str],
    ) -> httpx.Request:
        out = {**body, "model": dep.model}
        if stream:
            out["stream"] = True
        return self._post(dep, "chat_url", out, self._native_headers(dep, client_headers))

    def messages_response(self, dep: Deployment, content: bytes) -> tuple[bytes, Usage | None]:
        return content, tr.usage_from(tr.decode_message(content).usage)

    def messages_stream(self, dep: Deployment) -> PassthroughStream:
        return PassthroughStream()

    def count_tokens_request(
        self, dep: Deployment, body: dict[str, Any], client_headers: dict[str, str]
    ) -> httpx.Request:
        out = {**body, "model": dep.model}
        return self._post(dep, "count_url", out, self._native_headers(dep, client_headers))

    # -- models ---------------------------------------------------------------------------

    def models_request(self, dep: Deployment) -> httpx.Request:
        c = dep.cache
        return httpx.Request(
            "GET", c["models_url"], headers=c["headers"], extensions=c["extensions"]
        )

    def models_response(self, dep: Deployment, content: bytes) -> bytes:
        """Anthropic's model list in OpenAI's shape (``created`` from ``created_at``)."""
        from datetime import datetime

        listed = decode_body(
            _models_decoder, content, PROVIDER, "returned a model list that is not valid JSON"
        ).data
        data = []
        for m in listed:
            created = 0
            if m.created_at:
                try:
                    created = int(datetime.fromisoformat(m.created_at).timestamp())
                except ValueError:
                    pass
            data.append({"id": m.id, "object": "model", "created": created, "owned_by": PROVIDER})
        return encode({"object": "list", "data": data})

    # -- errors ---------------------------------------------------------------------------

    def map_error(
        self, dep: Deployment, status: int, headers: Mapping[str, str], content: bytes
    ) -> GatewayError:
        key = dep.api_key.reveal() if dep.api_key is not None else None
        return map_anthropic_error(status, headers, content, key)


def map_anthropic_error(
    status: int, headers: Mapping[str, str], content: bytes, key: str | None = None
) -> GatewayError:
    """An Anthropic error status and body as the client should see it."""
    etype, message = None, ""
    try:
        view = _error_decoder.decode(content)
        if view.error is not None:
            etype, message = view.error.type, view.error.message
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    message = scrub(message[:1000], key) if message else f"status {status}"
    keep = {k: headers[k] for k in RETRY_HEADERS if k in headers}
    if status in (401, 403):
        return auth_failed(PROVIDER, status)
    if status == 429:
        return rate_limited(PROVIDER, message, client_hints(headers))
    if status == 529 or etype == "overloaded_error":
        return UpstreamStatus(
            f"provider {PROVIDER} is overloaded: {message}",
            provider=PROVIDER,
            upstream_status=status,
            status=503,
            type="overloaded_error",
            code="overloaded",
            headers=keep,
        )
    if 400 <= status < 500:
        return request_rejected(PROVIDER, status, message, etype or "invalid_request_error", etype)
    return upstream_failed(PROVIDER, status, message, keep, type=etype or "upstream_error")


__all__ = ["AnthropicAdapter", "PassthroughStream", "map_anthropic_error"]
