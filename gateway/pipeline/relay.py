"""Stage 6: send the upstream request and relay the answer; the only module that sends.

``complete()`` returns a whole body. ``open_stream()`` sends, checks the status
and waits for the first translated frames before the response is committed,
so a failure until then is an ordinary HTTP error; after that, ``StreamRelay``
yields frames as they arrive and ends a broken stream with an error event and
no ``[DONE]``. Closing the relay (client gone, error, end) closes the upstream
response at once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec

from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from gateway.providers.base import Deployment, StreamTranslator
from gateway.wire.chat import Usage
from gateway.wire.errors import ErrorBody, ErrorEnvelope

_encode = msgspec.json.Encoder().encode


def error_frame(err: GatewayError) -> bytes:
    """The SSE event that ends a broken stream (the openai SDK raises it as APIError)."""
    body = ErrorEnvelope(ErrorBody(err.message, err.type, err.param, err.code))
    return b"data: " + _encode(body) + b"\n\n"


def _transport_error(dep: Deployment, exc: Exception, phase: str) -> GatewayError:
    if isinstance(exc, httpx.TimeoutException):
        which = "connect" if isinstance(exc, httpx.ConnectTimeout) else "read"
        limit = dep.timeouts.connect if which == "connect" else dep.timeouts.read
        return UpstreamTimeout(
            f"provider {dep.provider} timed out ({which} timeout {limit:g}s) {phase}",
            provider=dep.provider,
        )
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnavailable(
            f"cannot connect to provider {dep.provider}",
            provider=dep.provider,
            code="upstream_connect_failed",
        )
    return UpstreamUnavailable(
        f"provider {dep.provider} connection failed {phase}", provider=dep.provider
    )


async def send(dep: Deployment, request: httpx.Request) -> httpx.Response:
    try:
        return await dep.transport.handle_async_request(request)
    except httpx.TransportError as exc:
        raise _transport_error(dep, exc, "before answering") from None


async def complete(dep: Deployment, request: httpx.Request) -> tuple[httpx.Response, bytes]:
    """Send and read the whole answer; an error status raises the adapter's mapping."""
    resp = await send(dep, request)
    try:
        content = await resp.aread()
    except httpx.TransportError as exc:
        raise _transport_error(dep, exc, "while sending its answer") from None
    finally:
        await resp.aclose()
    if resp.status_code >= 400:
        raise dep.adapter.map_error(dep, resp.status_code, resp.headers, content)
    return resp, content


class StreamRelay:
    """An upstream stream after its first frames arrived, ready to be relayed."""

    def __init__(
        self,
        dep: Deployment,
        resp: httpx.Response,
        chunks: AsyncIterator[bytes],
        translator: StreamTranslator,
        first: list[bytes],
        on_close: Callable[[StreamRelay], Any] | None = None,
    ) -> None:
        self.dep = dep
        self.translator = translator
        self.error: GatewayError | None = None
        self.completed = False
        self.client_gone = True  # until the generator runs to its end
        self._resp = resp
        self._chunks = chunks
        self._first = first
        self._on_close = on_close

    @property
    def usage(self) -> Usage | None:
        return self.translator.usage

    async def frames(self) -> AsyncIterator[bytes]:
        translator = self.translator
        try:
            yield b"".join(self._first)
            try:
                async for chunk in self._chunks:
                    out = translator.feed(chunk)
                    if out:
                        yield b"".join(out) if len(out) > 1 else out[0]
                tail = translator.finish()
                self.completed = True
                if tail:
                    yield b"".join(tail)
            except GatewayError as err:
                self.error = err
                yield error_frame(err)
            except httpx.TransportError as exc:
                self.error = _transport_error(self.dep, exc, "mid-stream")
                yield error_frame(self.error)
            self.client_gone = False
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        resp, self._resp = self._resp, None  # type: ignore[assignment]
        if resp is not None:
            await resp.aclose()
            if self._on_close is not None:
                self._on_close(self)


async def open_stream(
    dep: Deployment,
    request: httpx.Request,
    translator: StreamTranslator,
    on_close: Callable[[StreamRelay], Any] | None = None,
) -> tuple[StreamRelay, float]:
    """Send, check the status, and read until the first frames; returns (relay, ttft)."""
    t0 = time.perf_counter()
    resp = await send(dep, request)
    if resp.status_code >= 400:
        try:
            content = await resp.aread()
        except httpx.TransportError:
            content = b""
        finally:
            await resp.aclose()
        raise dep.adapter.map_error(dep, resp.status_code, resp.headers, content)
    chunks = resp.stream.__aiter__()  # type: ignore[union-attr]
    first: list[bytes] = []
    try:
        while not first:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                first = translator.finish()
                if not first:  # an empty but well-formed stream: nothing to relay
                    first = [b""]
                break
            first = translator.feed(chunk)
    except GatewayError:
        await resp.aclose()
        raise
    except httpx.TransportError as exc:
        await resp.aclose()
        raise _transport_error(dep, exc, "before the first event") from None
    except BaseException:
        await resp.aclose()
        raise
    return StreamRelay(dep, resp, chunks, translator, first, on_close), time.perf_counter() - t0
