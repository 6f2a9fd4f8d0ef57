"""Upstream HTTP: the httpx API over a transport chosen by measurement.

The gateway builds ``httpx.Request`` objects (``Post``: from per-deployment parts,
its headers made only if read) and calls a transport's ``handle_async_request``
directly, skipping ``httpx.AsyncClient``'s per-request machinery (auth, cookies,
redirects, URL merging): nothing of it applies to a proxy, and it costs more than
the rest of the pipeline. The transport is (``GATEWAY_UPSTREAM_TRANSPORT``):

- ``h1`` (default): ``h1.H1Transport``, HTTP/1.1 of our own over ``asyncio.Protocol``
  with llhttp's parser (``httptools``). On one core the gateway forwards 1.4-1.5x more
  requests per second over it than over aiohttp's client, whose per-request
  machinery was most of the bare pass-through's own cost (bench/README.md).
- ``aiohttp``: ``AiohttpTransport`` below, an ``httpx.AsyncBaseTransport`` over one
  ``aiohttp.ClientSession`` per upstream (about 3x httpx's own pool), kept as the
  proven fallback.
- ``httpx``: ``httpx.AsyncHTTPTransport`` (httpcore), kept for HTTP/2 upstreams.

Timeouts travel in ``request.extensions["timeout"]`` as in httpx
(``connect``/``read``/``write``/``pool``, seconds). Errors are httpx's
exception types, so callers never see aiohttp's.

The relay reads answers through the small ``UpstreamResponse`` Protocol (status,
headers, a byte stream, ``aread``, ``aclose``), which ``httpx.Response`` meets.
The h1 and aiohttp transports' ``send`` return their own answers instead of
wrapping every answer in an ``httpx.Response``: the wrapper normalised and
copied every header and cost more than the rest of the transport's own work
(bench/README.md); ``handle_async_request`` stays for httpx's API.
``sender(transport)`` is what a deployment sends with.

Compression: the h1 and aiohttp transports ask every upstream for gzip
(``Accept-Encoding: gzip``) unless the request says otherwise (the relay asks
streams for ``identity``: a compressing proxy may hold events back), and decodes
a gzip or deflate body incrementally as it arrives, so callers always read
plain bytes: the gateway reads every answer (usage, errors, translation), so
there is nothing to pass through compressed. Another encoding is an error.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp
import httpx
from multidict import CIMultiDict

__all__ = [
    "AiohttpResponse",
    "AiohttpTransport",
    "Head",
    "Post",
    "Sender",
    "UpstreamResponse",
    "build_transport",
    "cached_head",
    "head",
    "post",
    "sender",
    "set_header",
]


class UpstreamResponse(Protocol):
    """What the relay reads of an upstream's answer (``httpx.Response`` meets it)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def stream(self) -> Any:  # an async iterable of body bytes
        ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


Sender = Callable[[httpx.Request], Awaitable[UpstreamResponse]]


# Content-Encoding -> zlib's wbits: 31 gzip; 47 deflate (zlib format or, said so by the
# +32, gzip: servers label them loosely). A raw deflate stream is not decoded.
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 47}


def _decoder(encoding: str) -> Any:
    wbits = _WBITS.get(encoding.strip().lower())
    if wbits is None:
        raise httpx.RemoteProtocolError(
            f"upstream sent an unsupported content-encoding {encoding[:20]!r}"
        )
    return zlib.decompressobj(wbits)


class _AiohttpStream(httpx.AsyncByteStream):
    __slots__ = ("_decoder", "_resp")

    def __init__(self, resp: aiohttp.ClientResponse, decoder: Any = None) -> None:
        self._resp = resp
        self._decoder = decoder  # a zlib decompressor when the body is compressed

    async def __aiter__(self) -> AsyncIterator[bytes]:
        decoder = self._decoder
        try:
            async for chunk in self._resp.content.iter_any():
                if decoder is None:
                    yield chunk
                    continue
                out = decoder.decompress(chunk)
                if out:
                    yield out
            if decoder is not None:
                out = decoder.flush()
                if out:
                    yield out
                if not decoder.eof:
                    raise httpx.RemoteProtocolError("upstream ended the compressed body early")
        except zlib.error as exc:
            raise httpx.RemoteProtocolError("upstream sent a body that does not decode") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:  # a timeout: sock_read between chunks
            raise _body_error(exc) from exc

    async def aclose(self) -> None:
        # close(), not release(): a body we stopped reading must not go back to the pool.
        if not self._resp.closed:
            if self._resp.content.at_eof():
                self._resp.release()
            else:
                self._resp.close()


def _body_error(exc: TimeoutError | aiohttp.ClientError) -> httpx.TransportError:
    """What reading an answer's body raised, as httpx's error."""
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout("upstream read timed out")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError("upstream ended the body early")
    return httpx.ReadError(type(exc).__name__)


class AiohttpResponse:
    """An aiohttp answer as the relay reads it (``UpstreamResponse``)."""

    __slots__ = ("headers", "status_code", "stream")

    def __init__(
        self, resp: aiohttp.ClientResponse, headers: Mapping[str, str], stream: _AiohttpStream
    ) -> None:
        self.status_code = resp.status
        self.headers = headers  # case-insensitive (aiohttp's CIMultiDictProxy)
        self.stream = stream

    async def aread(self) -> bytes:
        stream = self.stream
        if stream._decoder is not None:
            chunks = [chunk async for chunk in stream]
            return b"".join(chunks)
        try:  # plain bytes: aiohttp's own read, one await for the whole body
            return await stream._resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _body_error(exc) from exc

    async def aclose(self) -> None:
        await self.stream.aclose()


def sender(transport: httpx.AsyncBaseTransport) -> Sender:
    """How a deployment sends on ``transport``: the aiohttp transport's own ``send``,
    else httpx's ``handle_async_request``."""
    own = getattr(transport, "send", None)  # the aiohttp and h1 transports' own send
    if own is not None and isinstance(transport, AiohttpTransport | _h1().H1Transport):
        return own  # type: ignore[no-any-return]
    return transport.handle_async_request


def _h1() -> Any:
    from gateway.providers import h1  # h1 builds on this module

    return h1


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport backed by one pooled, keep-alive aiohttp session."""

    def __init__(
        self,
        *,
        pool_size: int = 256,
        keepalive_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._connector_args: dict[str, Any] = {
            "limit": pool_size,
            "limit_per_host": 0,
            "keepalive_timeout": keepalive_timeout,
            "ttl_dns_cache": 300,
            "ssl": verify,
        }
        self._default_timeout = (connect_timeout, read_timeout)
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._get_session()

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: a session must be made inside the running event loop.
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(**self._connector_args),
                auto_decompress=False,  # decoded by _AiohttpStream, incrementally
                headers={"Accept-Encoding": "gzip"},  # unless a request says otherwise
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return session

    def _timeout(self, ext: dict[str, Any] | None) -> aiohttp.ClientTimeout:
        key = (ext.get("connect"), ext.get("read")) if ext else self._default_timeout
        t = self._timeouts.get(key)
        if t is None:
            t = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, sock_connect=key[0], connect=key[0], sock_read=key[1]
            )
        return t

    async def send(self, request: httpx.Request) -> AiohttpResponse:
        """Send ``request``; its answer as the relay reads it."""
        session = self._get_session()
        timeout = self._timeout(request.extensions.get("timeout"))
        if isinstance(request, Post):
            target, pairs = request.wire()
        else:
            target, pairs = str(request.url), request.headers.multi_items()
        try:
            resp = await session.request(
                request.method,
                target,
                headers=pairs,
                data=request.content,
                timeout=timeout,
                allow_redirects=False,
                compress=None,
            )
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc.os_error) or "connection failed") from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout("upstream connect timed out") from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout("upstream did not answer in time") from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise httpx.RemoteProtocolError("upstream closed the connection") from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(type(exc).__name__) from exc
        headers: Mapping[str, str] = resp.headers
        decoder = None
        encoding = headers.get("Content-Encoding")
        if encoding and encoding != "identity":
            try:
                decoder = _decoder(encoding)
            except httpx.RemoteProtocolError:
                resp.close()
                raise
            # the body callers read is decoded: its headers must not say otherwise
            plain = CIMultiDict(headers)
            plain.popall("Content-Encoding", None)
            plain.popall("Content-Length", None)
            headers = plain
        return AiohttpResponse(resp, headers, _AiohttpStream(resp, decoder))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's transport API (what ``send`` answers, as an ``httpx.Response``)."""
        r = await self.send(request)
        return httpx.Response(
            r.status_code,
            headers=list(r.headers.items()),
            stream=r.stream,
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0)


Head = tuple[str, list[tuple[str, str]]]  # a URL's text and the headers to send with it


def head(url: httpx.URL, headers: list[tuple[bytes, bytes]]) -> Head:
    """What ``post`` needs of a deployment's URL and headers, computed once (at
    ``prepare`` or the first request): the URL as text and the header pairs as
    lower-case strings, ``host`` first, ``accept-encoding: gzip`` unless given."""
    pairs = [("host", url.netloc.decode("ascii"))]
    pairs += [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers]
    if not any(k == "accept-encoding" for k, _ in pairs):
        pairs.append(("accept-encoding", "gzip"))  # decoded as it arrives (see above)
    return str(url), pairs


def cached_head(cache: dict[str, Any], url_key: str) -> Head:
    """``head(cache[url_key], cache["headers"])`` for a deployment's ``cache``, made on
    first use and made again once ``prepare`` has put a new URL or headers there."""
    url, headers = cache[url_key], cache["headers"]
    memo = cache.get("heads")
    if memo is None:
        memo = cache["heads"] = {}
    hit = memo.get(url_key)
    if hit is None or hit[0] is not url or hit[1] is not headers:
        hit = memo[url_key] = (url, headers, head(url, headers))
    return hit[2]


class Post(httpx.Request):
    """A POST ``httpx.Request`` made from a deployment's precomputed ``Head`` in about a
    microsecond instead of seven.

    ``httpx.Request.__init__`` is skipped on purpose: it normalises every header into
    an ``httpx.Headers`` and wraps the body, and the aiohttp transport then takes the
    headers apart again (``multi_items``) and prints the URL. Here ``headers`` becomes
    an ``httpx.Headers`` only when something reads it (the httpx transport, a test);
    until then ``wire()`` hands the aiohttp transport the precomputed pairs and URL
    text. ``set_header`` adds or replaces a header either way (the relay's
    ``accept-encoding``, a trace's ``traceparent``). Everything else (``content``,
    ``read``, ``stream``, ``extensions``) is httpx's own.
    """

    def __init__(
        self,
        url: httpx.URL,
        head: Head,
        content: bytes,
        extensions: dict[str, Any],
    ) -> None:
        self.method = "POST"
        self.url = url
        self.extensions = extensions
        self.stream = httpx.ByteStream(content)
        self._content = content
        self._target = head[0]
        self._pairs = [*head[1], ("content-length", str(len(content)))]
        self._headers: httpx.Headers | None = None

    @property
    def headers(self) -> httpx.Headers:
        h = self._headers
        if h is None:
            h = self._headers = httpx.Headers(self._pairs)
        return h

    @headers.setter
    def headers(self, value: httpx.Headers) -> None:
        self._headers = httpx.Headers(value)

    def set_header(self, name: str, value: str) -> None:
        """``headers[name] = value`` (one value, replacing any), headers made or not."""
        if self._headers is not None:
            self._headers[name] = value
            return
        low = name.lower()
        self._pairs = [p for p in self._pairs if p[0] != low]
        self._pairs.append((low, value))

    def wire(self) -> Head:
        """The URL text and header pairs to send: precomputed unless ``headers`` was read."""
        if self._headers is None:
            return self._target, self._pairs
        return str(self.url), self._headers.multi_items()


def post(url: httpx.URL, head: Head, content: bytes, extensions: dict[str, Any]) -> Post:
    """A POST of ``content`` to ``url`` (``head``: from ``head(url, headers)``)."""
    return Post(url, head, content, extensions)


def set_header(request: httpx.Request, name: str, value: str) -> None:
    """``request.headers[name] = value``, the cheap way when ``request`` is a ``Post``."""
    if isinstance(request, Post):
        request.set_header(name, value)
    else:
        request.headers[name] = value


def build_transport(
    kind: str, *, pool_size: int, connect_timeout: float, read_timeout: float
) -> httpx.AsyncBaseTransport:
    """One transport per upstream, built at start-up."""
    if kind == "h1":
        return _h1().H1Transport(  # type: ignore[no-any-return]
            pool_size=pool_size, connect_timeout=connect_timeout, read_timeout=read_timeout
        )
    if kind == "aiohttp":
        return AiohttpTransport(
            pool_size=pool_size, connect_timeout=connect_timeout, read_timeout=read_timeout
        )
    return httpx.AsyncHTTPTransport(
        limits=httpx.Limits(
            max_connections=pool_size, max_keepalive_connections=pool_size, keepalive_expiry=30
        ),
        retries=0,
    )
