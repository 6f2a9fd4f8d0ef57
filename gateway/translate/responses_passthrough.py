"""OpenAI's own Responses API relayed (OpenAI and Azure deployments that serve it).

Requests pass through with only ``model`` replaced (the adapters build them);
answers are relayed as they came. ``ResponsesPassthroughStream`` re-frames each
event whole (``event: <type>`` and its JSON on one ``data:`` line) while it
watches the stream:

* ``response.created``, ``response.queued`` and ``response.in_progress`` are held
  back until the next event, so the relay commits on content and a stream that
  dies in its preamble can still be retried elsewhere;
* ``response.completed`` and ``response.incomplete`` end it properly and carry the
  usage the gateway settles;
* ``response.failed`` and the ``error`` event end it as an upstream failure (before
  the commit: retried; after it: the endpoint's error shape ends the client's stream,
  numbered after the last event sent);
* a body that ends before a terminal event was cut short.
"""

from __future__ import annotations

import msgspec

from gateway.errors import GatewayError, UpstreamStatus
from gateway.sse_write import json_event
from gateway.translate.responses_response import chat_usage
from gateway.translate.upstream import SSEStream, decode_body, decode_event, ended_early
from gateway.wire.chat import Usage
from gateway.wire.responses import EventView, ResponseView

__all__ = ["ResponsesPassthroughStream", "passthrough_usage"]

_PREAMBLE = frozenset({"response.created", "response.queued", "response.in_progress"})
_event_decoder = msgspec.json.Decoder(EventView)
_response_decoder = msgspec.json.Decoder(ResponseView)


class _ErrorView(msgspec.Struct):
    code: str | None = None
    message: str | None = None


class _FailedView(msgspec.Struct):
    error: _ErrorView | None = None


_failed_decoder = msgspec.json.Decoder(_FailedView)


def passthrough_usage(provider: str, content: bytes) -> Usage | None:
    """The usage of a whole ``response`` body (502 if it is not JSON)."""
    view = decode_body(
        _response_decoder, content, provider, "returned a body that is not valid JSON"
    )
    return chat_usage(view.usage)


def _failed(provider: str, code: str | None, message: str | None) -> GatewayError:
    status = 429 if code == "rate_limit_exceeded" else 502
    return UpstreamStatus(
        f"provider {provider} failed mid-stream: {(message or 'response failed')[:1000]}",
        provider=provider,
        upstream_status=status,
        status=status,
        type="rate_limit_error" if status == 429 else "upstream_error",
        code=code[:64] if code else None,
    )


class ResponsesPassthroughStream(SSEStream):
    """Responses events relayed as Responses events; see the module docstring."""

    __slots__ = ("_held",)

    def __init__(self, provider: str) -> None:
        super().__init__(provider)
        self._held: list[bytes] | None = []  # None once the preamble went out

    def _event(self, etype: str, data: str, frames: list[bytes]) -> None:
        if self.done or data == "[DONE]":
            return
        view = decode_event(_event_decoder, data, self._provider)
        kind = view.type or etype
        if kind == "error":
            raise _failed(self._provider, view.code, view.message)
        if kind == "response.failed":
            err = _ErrorView()
            if len(view.response):
                failed = decode_event(
                    _failed_decoder, bytes(view.response).decode(), self._provider
                )
                err = failed.error or err
            raise _failed(self._provider, err.code, err.message)
        frame = json_event(data, kind)
        held = self._held
        if held is not None:
            if kind in _PREAMBLE:
                held.append(frame)
                return
            frames.extend(held)
            self._held = None
        frames.append(frame)
        if kind in ("response.completed", "response.incomplete"):
            self.done = True
            if len(view.response):
                body = bytes(view.response).decode()
                self.usage = chat_usage(decode_event(_response_decoder, body, self._provider).usage)

    def _end_of_body(self) -> list[bytes]:
        if self.done:
            return []
        raise ended_early(self._provider, "it was complete")
