"""Stage 6: send the upstream request and relay the answer; the only module that sends.

``complete()`` returns a whole body. ``open_stream()`` sends, checks the status
and waits for the first translated frames before the response is committed,
so a failure until then is an ordinary HTTP error; after that, ``StreamRelay``
yields frames as they arrive and ends a broken stream with an error event and
no ``[DONE]``; the frames that came before the error, even in the same upstream
chunk, go out first. Closing the relay (client gone, error, end) closes the
upstream response at once.

The commit point is the first *content* event: a preamble (OpenAI's role-only
first chunk, Anthropic's ``message_start``/``content_block_start``/``ping``) is
held back with it, so a stream that dies after its preamble can still be retried.
``start_stream()`` is ``open_stream()`` with the per-attempt limits the attempt
loop (``attempts.py``) sets: stream idle and total timeouts, and what to settle
when a stream breaks before the provider reported usage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec

from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from gateway.providers.base import Deployment, StreamTranslator
from gateway.sse_write import event
from gateway.telemetry import metrics
from gateway.wire.chat import Usage
from gateway.wire.errors import ErrorBody, ErrorEnvelope

_encode = msgspec.json.Encoder().encode
MAX_PREAMBLE_FRAMES = 64  # commit anyway after this many frames without content
# Anthropic events that come before any content
_PREAMBLE_EVENTS = (b"event: message_start\n", b"event: content_block_start\n", b"event: ping\n")


class _ChoiceView(msgspec.Struct):
    delta: dict[str, Any] | None = None
    finish_reason: str | None = None


class _ChunkView(msgspec.Struct):
    choices: list[_ChoiceView] | None = None


_chunk_view = msgspec.json.Decoder(_ChunkView)


def is_content(frame: bytes) -> bool:
    """Does this translated frame carry content (or end the stream)? A preamble does not:
    OpenAI's role-only or usage-only chunks, Anthropic's start and ping events."""
    if frame.startswith(b"data: {"):
        try:
            view = _chunk_view.decode(frame[6:])
        except (msgspec.DecodeError, msgspec.ValidationError):
            return True
        for c in view.choices or ():
            if c.finish_reason is not None:
                return True
            for k, v in (c.delta or {}).items():
                if k != "role" and v not in (None, "", [], {}):
                    return True
        return False
    if frame.startswith(b"event: "):
        return not frame.startswith(_PREAMBLE_EVENTS)
    return bool(frame)


def error_frame(err: GatewayError) -> bytes:
    """The SSE event that ends a broken stream (the openai SDK raises it as APIError)."""
    body = ErrorEnvelope(ErrorBody(err.message, err.type, err.param, err.code))
    return event(_encode(body))


def _transport_error(dep: Deployment, exc: Exception, phase: str) -> GatewayError:
    """httpx's error as the client should see it; ``err.connect_failed`` is set when the
    request never reached the provider (always safe to retry)."""
    err: GatewayError
    if isinstance(exc, httpx.TimeoutException):
        which = "connect" if isinstance(exc, httpx.ConnectTimeout) else "read"
        limit = dep.timeouts.connect if which == "connect" else dep.timeouts.read
        err = UpstreamTimeout(
            f"provider {dep.provider} timed out ({which} timeout {limit:g}s) {phase}",
            provider=dep.provider,
        )
    elif isinstance(exc, httpx.ConnectError):
        err = UpstreamUnavailable(
            f"cannot connect to provider {dep.provider}",
            provider=dep.provider,
            code="upstream_connect_failed",
        )
    else:
        err = UpstreamUnavailable(
            f"provider {dep.provider} connection failed {phase}", provider=dep.provider
        )
    connect_failed = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    err.connect_failed = connect_failed  # type: ignore[union-attr]
    return err


def idle_timeout(dep: Deployment, idle: float) -> UpstreamTimeout:
    return UpstreamTimeout(
        f"provider {dep.provider} sent nothing for {idle:g}s mid-stream (idle timeout)",
        provider=dep.provider,
        code="stream_idle_timeout",
    )


async def send(dep: Deployment, request: httpx.Request) -> httpx.Response:
    try:
        resp = await dep.transport.handle_async_request(request)
    except httpx.TransportError as exc:
        raise _transport_error(dep, exc, "before answering") from None
    record_provider_limits(dep, resp.headers)
    return resp


# What each provider says is left of its own quota: (header, kind).
_LIMIT_HEADERS: tuple[tuple[str, str], ...] = (
    ("x-ratelimit-remaining-requests", "requests"),
    ("x-ratelimit-remaining-tokens", "tokens"),
    ("anthropic-ratelimit-requests-remaining", "requests"),
    ("anthropic-ratelimit-tokens-remaining", "tokens"),
    ("anthropic-ratelimit-input-tokens-remaining", "input_tokens"),
    ("anthropic-ratelimit-output-tokens-remaining", "output_tokens"),
)


def record_provider_limits(dep: Deployment, headers: httpx.Headers) -> None:
    """Keep the provider's own rate-limit headers (any status) as gauges, so an
    operator sees a deployment running out of quota before its 429s start."""
    if "x-ratelimit-remaining-requests" not in headers and (
        "anthropic-ratelimit-requests-remaining" not in headers
    ):
        return
    for name, kind in _LIMIT_HEADERS:
        value = headers.get(name)
        if value is not None:
            try:
                remaining = float(value)
            except ValueError:
                continue
            metrics.llm_provider_ratelimit_remaining.labels(dep.provider, dep.label, kind).set(
                remaining
            )


async def complete(dep: Deployment, request: httpx.Request) -> tuple[httpx.Response, bytes]:
    """Send and read the whole answer; an error status raises the adapter's mapping."""
    resp = await send(dep, request)
    try:
        # The transport's byte stream directly: Response.aread() adds a decoder and
        # chunking layer per chunk, and the gateway asks for no content-encoding.
        chunks = [chunk async for chunk in resp.stream]  # type: ignore[union-attr]
        content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except httpx.TransportError as exc:
        raise _transport_error(dep, exc, "while sending its answer") from None
    finally:
        await resp.aclose()
    if resp.status_code >= 400:
        raise dep.adapter.map_error(dep, resp.status_code, resp.headers, content)
    return resp, content


class StreamRelay:
    """An upstream stream after its first content arrived, ready to be relayed.

    ``error`` is set when it broke mid-stream, ``completed`` when it ran to its end;
    neither when the client went away. ``usage`` is the provider's, or, when a stream
    ended before the provider reported it, an estimate of what was generated (one
    token per relayed content event, the prompt as estimated before sending).
    """

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
        self.idle: float | None = None  # s without an upstream chunk before an error event
        self.deadline: float | None = None  # loop time when the whole stream must be over
        self.prompt_tokens = 0  # the estimate settled if the provider never reported usage
        self.content_frames = 0
        self._resp = resp
        self._chunks = chunks
        self._first = first
        self.on_close = on_close
        self._hooks: list[Callable[[StreamRelay], Any]] = []

    @property
    def usage(self) -> Usage | None:
        u = self.translator.usage
        if u is not None or self.completed or not self.content_frames:
            return u
        n = self.content_frames
        p = self.prompt_tokens
        return Usage(prompt_tokens=p, completion_tokens=n, total_tokens=p + n)

    def add_close_hook(self, hook: Callable[[StreamRelay], Any]) -> None:
        """Runs at close, before ``on_close`` (the attempt loop's bookkeeping)."""
        self._hooks.append(hook)

    async def _next(self) -> bytes:
        chunks = self._chunks
        if self.idle is None:
            return await chunks.__anext__()
        try:
            async with asyncio.timeout(self.idle):
                return await chunks.__anext__()
        except TimeoutError:
            raise idle_timeout(self.dep, self.idle) from None

    async def frames(self) -> AsyncIterator[bytes]:
        translator = self.translator
        loop = asyncio.get_running_loop()
        try:
            self.content_frames = len(self._first)
            yield b"".join(self._first)
            try:
                while True:
                    if translator.error is not None:
                        # found with the frames just delivered: now it ends the stream
                        raise translator.error
                    try:
                        chunk = await self._next()
                    except StopAsyncIteration:
                        break
                    out = translator.feed(chunk)
                    if out:
                        self.content_frames += len(out)
                        yield b"".join(out) if len(out) > 1 else out[0]
                    if self.deadline is not None and loop.time() > self.deadline:
                        raise UpstreamTimeout(
                            f"provider {self.dep.provider} stream passed its total timeout",
                            provider=self.dep.provider,
                            code="stream_total_timeout",
                        )
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
            for hook in self._hooks:
                hook(self)
            if self.on_close is not None:
                self.on_close(self)


async def open_stream(
    dep: Deployment,
    request: httpx.Request,
    translator: StreamTranslator,
    on_close: Callable[[StreamRelay], Any] | None = None,
) -> tuple[StreamRelay, float]:
    """Send, check the status, and read until the first content; returns (relay, ttft)."""
    return await start_stream(dep, request, translator, on_close)


async def start_stream(
    dep: Deployment,
    request: httpx.Request,
    translator: StreamTranslator,
    on_close: Callable[[StreamRelay], Any] | None = None,
    *,
    idle: float | None = None,
    total: float | None = None,
    prompt_tokens: int = 0,
) -> tuple[StreamRelay, float]:
    """``open_stream`` with the attempt's limits: ``idle`` seconds between upstream
    chunks once committed (None: the transport's read timeout), ``total`` seconds for
    the whole stream from its sending; the caller bounds the wait for the first content."""
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
        while True:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                first.extend(translator.finish())
                if not first:  # an empty but well-formed stream: nothing to relay
                    first = [b""]
                break
            out = translator.feed(chunk)
            first.extend(out)
            if translator.error is not None:
                # Content before the error commits the stream: the client gets that
                # content, then the error. Before any content it is an ordinary failure.
                if any(is_content(f) for f in first):
                    break
                raise translator.error
            if out and (len(first) >= MAX_PREAMBLE_FRAMES or any(is_content(f) for f in out)):
                break
    except GatewayError:
        await resp.aclose()
        raise
    except httpx.TransportError as exc:
        await resp.aclose()
        raise _transport_error(dep, exc, "before the first event") from None
    except BaseException:
        await resp.aclose()
        raise
    r = StreamRelay(dep, resp, chunks, translator, first, on_close)
    if idle is not None and idle < dep.timeouts.read:
        r.idle = idle
    ttft = time.perf_counter() - t0
    if total is not None:  # counted from the request's sending
        r.deadline = asyncio.get_running_loop().time() + total - ttft
    r.prompt_tokens = prompt_tokens
    return r, ttft
