"""Sending an upstream request and relaying its answer: the only module that sends.

``complete()`` returns a whole body. ``start_stream()`` sends, checks the status
and waits for the first translated frames before the response is committed,
so a failure until then is an ordinary HTTP error; after that, ``StreamRelay``
yields frames as they arrive and ends a broken stream with an error event and
no ``[DONE]``; the frames that came before the error, even in the same upstream
chunk, go out first. Closing the relay (client gone, error, end) closes the
upstream response at once.

The commit point is the first *content* event: a preamble (OpenAI's role-only
first chunk, Anthropic's ``message_start``/``content_block_start``/``ping``) is
held back with it, so a stream that dies after its preamble can still be retried.
The attempt loop (``attempts.py``) sets each stream's idle and total timeouts and
what to settle when it breaks before the provider reported usage.

Whoever needs to see a relayed stream attaches to it rather than wrapping it:
``observe(fn)`` sees every piece before the client does (the cache's assembler,
the limiter's event count), ``add_close_hook(fn)`` runs once when it ends however
it ends (the loop's bookkeeping, then settle), and ``error_event`` is the
endpoint's error shape. One generator per stream, whatever is attached.

``PendingStream`` is the keep-alive: a stream committed (status 200 sent) while
the attempt loop still looks for a deployment, sending ``: keep-alive`` comments
until the winner's frames (or the error event) follow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import msgspec

from gateway.deadline import deadline
from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from gateway.pipeline.shapes import OPENAI
from gateway.providers.base import Deployment, StreamTranslator
from gateway.providers.transport import UpstreamResponse, set_header
from gateway.telemetry import metrics
from gateway.wire.chat import Usage

log = logging.getLogger("gateway.pipeline")

_encode = msgspec.json.Encoder().encode
MAX_PREAMBLE_FRAMES = 64  # commit anyway after this many frames without content
# Anthropic events that come before any content
_PREAMBLE_EVENTS = (b"event: message_start\n", b"event: content_block_start\n", b"event: ping\n")


class _ChoiceView(msgspec.Struct, gc=False):
    delta: dict[str, Any] | None = None
    finish_reason: str | None = None


class _ChunkView(msgspec.Struct, gc=False):
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


error_frame = OPENAI.event  # the default end of a broken stream: OpenAI's error event


def _transport_error(dep: Deployment, exc: Exception, phase: str) -> GatewayError:
    """httpx's error as the client should see it; a connection that never reached the
    provider is ``connect_failed`` (always safe to retry)."""
    if isinstance(exc, httpx.TimeoutException):
        connect = isinstance(exc, httpx.ConnectTimeout)
        limit = dep.timeouts.connect if connect else dep.timeouts.read
        return UpstreamTimeout(
            f"provider {dep.provider} timed out "
            f"({'connect' if connect else 'read'} timeout {limit:g}s) {phase}",
            provider=dep.provider,
            kind="connect" if connect else "read",
        )
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnavailable(
            f"cannot connect to provider {dep.provider}",
            provider=dep.provider,
            code="upstream_connect_failed",
            connect_failed=True,
        )
    return UpstreamUnavailable(
        f"provider {dep.provider} connection failed {phase}", provider=dep.provider
    )


def idle_timeout(dep: Deployment, idle: float) -> UpstreamTimeout:
    return UpstreamTimeout(
        f"provider {dep.provider} sent nothing for {idle:g}s mid-stream (idle timeout)",
        provider=dep.provider,
        code="stream_idle_timeout",
        kind="idle",
    )


async def send(dep: Deployment, request: httpx.Request) -> UpstreamResponse:
    try:
        resp = await dep.send(request)
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


def record_provider_limits(dep: Deployment, headers: Mapping[str, str]) -> None:
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


async def complete(dep: Deployment, request: httpx.Request) -> tuple[UpstreamResponse, bytes]:
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
    """An upstream stream after its first content arrived, ready to be relayed.

    ``error`` is set when it broke mid-stream, ``completed`` when it ran to its end;
    neither when the client went away. ``usage`` is the provider's, or, when a stream
    ended before the provider reported it, an estimate of what was generated (one
    token per relayed content event, the prompt as estimated before sending).
    """

    def __init__(
        self,
        dep: Deployment,
        resp: UpstreamResponse,
        chunks: AsyncIterator[bytes],
        translator: StreamTranslator,
        first: list[bytes],
    ) -> None:
        self.dep = dep
        self.error_event: Callable[[GatewayError], bytes] = error_frame  # the endpoint's shape
        self._observers: list[Callable[[bytes], Any]] = []
        self.translator = translator
        self.error: GatewayError | None = None
        self.completed = False
        self.client_gone = True  # until the generator runs to its end
        self.idle: float | None = None  # s without an upstream chunk before an error event
        self.deadline: float | None = None  # loop time when the whole stream must be over
        self.prompt_tokens = 0  # the estimate settled if the provider never reported usage
        self.content_frames = 0
        self.last = False  # the frames just yielded end the stream: nothing follows them
        self._resp = resp
        self._chunks = chunks
        self._first = first
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
        """``hook(relay)`` runs once at close, in the order the hooks were added."""
        self._hooks.append(hook)

    def observe(self, observer: Callable[[bytes], Any]) -> None:
        """``observer(frames)`` sees every relayed piece before the client does (the cache's
        assembler, the limiter's event count): no generator layer per observer."""
        self._observers.append(observer)

    async def _next(self) -> bytes:
        chunks = self._chunks
        if self.idle is None:
            return await chunks.__anext__()
        try:
            with deadline(self.idle):
                return await chunks.__anext__()
        except TimeoutError:
            raise idle_timeout(self.dep, self.idle) from None

    def _ended(self) -> bool:
        """The upstream's body has been read to its end: the h1 transport knows (others
        say nothing, and the stream ends with its next read, as it always did)."""
        return getattr(self._resp.stream, "ended", False)

    async def frames(self) -> AsyncIterator[bytes]:
        translator = self.translator
        observers = self._observers
        loop = asyncio.get_running_loop()
        try:
            first = self._first
            self.content_frames = len(first)
            self.completed = translator.done and translator.error is None
            if self.completed and self._ended():  # the whole answer came before its relay
                first = [*first, *translator.finish()]
                self.last = True
            out = b"".join(first)
            for observe in observers:
                observe(out)
            yield out
            try:
                while not self.last:
                    if translator.error is not None:
                        # found with the frames just delivered: now it ends the stream
                        raise translator.error
                    try:
                        chunk = await self._next()
                    except StopAsyncIteration:
                        break
                    frames = translator.feed(chunk)
                    if frames:
                        self.content_frames += len(frames)
                        # The provider's own end ([DONE], message_stop) was relayed: the
                        # answer is whole even if the client leaves before the body's EOF.
                        self.completed = translator.done and translator.error is None
                        if self.completed and self._ended():
                            # and the upstream's body is over: the tail goes with these
                            # frames, the last (``last``: the reply ends with them)
                            frames = [*frames, *translator.finish()]
                            self.last = True
                        out = b"".join(frames) if len(frames) > 1 else frames[0]
                        for observe in observers:
                            observe(out)
                        yield out
                        if self.last:
                            break
                    if self.deadline is not None and loop.time() > self.deadline:
                        raise UpstreamTimeout(
                            f"provider {self.dep.provider} stream passed its total timeout",
                            provider=self.dep.provider,
                            code="stream_total_timeout",
                            kind="total",
                        )
                if not self.last:
                    tail = translator.finish()
                    self.completed = True
                    if tail:
                        out = b"".join(tail)
                        for observe in observers:
                            observe(out)
                        yield out
            except GatewayError as err:
                self.error = err
                yield self.error_event(err)
            except httpx.TransportError as exc:
                self.error = _transport_error(self.dep, exc, "mid-stream")
                yield self.error_event(self.error)
            self.client_gone = False
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        resp, self._resp = self._resp, None  # type: ignore[assignment]
        if resp is not None:
            await resp.aclose()
            hooks, self._hooks = self._hooks, []
            run_hooks(hooks, self)


def run_hooks(hooks: list[Callable[[Any], Any]], relay: Any) -> None:
    """Each close hook once, in order; one that raises is logged and the next still
    runs (the settle after a cache store that failed on a strange stream, say)."""
    for hook in hooks:
        try:
            hook(relay)
        except Exception as exc:
            log.error(
                "stream close hook failed",
                exc_info=exc,
                extra={"fields": {"hook": getattr(hook, "__qualname__", "?")}},
            )


async def start_stream(
    dep: Deployment,
    request: httpx.Request,
    translator: StreamTranslator,
    *,
    idle: float | None = None,
    total: float | None = None,
    prompt_tokens: int = 0,
) -> tuple[StreamRelay, float]:
    """Send, check the status, and read until the first content: ``(relay, ttft)``.
    ``idle``: seconds between upstream chunks once committed (None: the transport's
    read timeout); ``total``: seconds for the whole stream from its sending. The
    caller bounds the wait for the first content."""
    t0 = time.perf_counter()
    # Events as they come: a proxy compressing the stream may hold them back.
    set_header(request, "accept-encoding", "identity")
    resp = await send(dep, request)
    if resp.status_code >= 400:
        try:
            content = await resp.aread()
        except httpx.TransportError:
            content = b""
        finally:
            await resp.aclose()
        raise dep.adapter.map_error(dep, resp.status_code, resp.headers, content)
    chunks = resp.stream.__aiter__()
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
    r = StreamRelay(dep, resp, chunks, translator, first)
    if idle is not None and idle < dep.timeouts.read:
        r.idle = idle
    ttft = time.perf_counter() - t0
    if total is not None:  # counted from the request's sending
        r.deadline = asyncio.get_running_loop().time() + total - ttft
    r.prompt_tokens = prompt_tokens
    return r, ttft


KEEPALIVE_FRAME = b": keep-alive\n\n"


class PendingStream:
    """A stream committed (status 200 sent) before its first content, sending keep-alive
    comments every ``interval`` seconds while the attempt loop (``task``, whose result
    has ``.dep`` and a ``StreamRelay`` as ``.result``) still runs; it then relays the
    winner's frames, or ends with the error event. Reads like a ``StreamRelay``;
    ``waiting_on()`` names the deployment being waited on."""

    def __init__(
        self, task: asyncio.Future[Any], waiting_on: Callable[[], Deployment], interval: float
    ) -> None:
        self._task = task
        self._waiting_on = waiting_on
        self._interval = interval
        self.inner: StreamRelay | None = None
        self._error: GatewayError | None = None
        self.dep = waiting_on()
        self.client_gone = True
        self.error_event: Callable[[GatewayError], bytes] = error_frame
        self._observers: list[Callable[[bytes], Any]] = []
        self._hooks: list[Callable[[Any], Any]] = []

    @property
    def error(self) -> GatewayError | None:
        return self.inner.error if self.inner is not None else self._error

    @property
    def completed(self) -> bool:
        return self.inner.completed if self.inner is not None else False

    @property
    def usage(self) -> Usage | None:
        return self.inner.usage if self.inner is not None else None

    @property
    def last(self) -> bool:
        return self.inner.last if self.inner is not None else False

    def observe(self, observer: Callable[[bytes], Any]) -> None:
        self._observers.append(observer)

    def add_close_hook(self, hook: Callable[[Any], Any]) -> None:
        self._hooks.append(hook)

    def _adopt(self, inner: StreamRelay) -> None:
        """The winner: it relays from now on, with everything attached to this stream."""
        self.inner = inner
        inner.error_event = self.error_event
        for observer in self._observers:
            inner.observe(observer)
        for hook in self._hooks:
            inner.add_close_hook(hook)
        self._hooks = []

    async def frames(self) -> AsyncIterator[bytes]:
        task = self._task
        try:
            while not task.done():
                done, _ = await asyncio.wait({task}, timeout=self._interval)
                if not done:
                    yield KEEPALIVE_FRAME
            try:
                served = task.result()
            except GatewayError as err:
                self._error = err
                self.dep = self._waiting_on()
                yield self.error_event(err)
                self.client_gone = False
                return
            self.dep = served.dep
            self._adopt(served.result)
            assert self.inner is not None
            async for frame in self.inner.frames():
                yield frame
            self.client_gone = self.inner.client_gone
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        task = self._task
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.inner is not None:
            await self.inner.aclose()
            return
        if not task.cancelled() and task.exception() is None:
            # served just as the client went away: close the winner's upstream
            self._adopt(task.result().result)
            assert self.inner is not None
            await self.inner.aclose()
            return
        hooks, self._hooks = self._hooks, []
        run_hooks(hooks, self)
