"""Upstream HTTP: the httpx API over a transport chosen by measurement.

The gateway builds ``httpx.Request`` objects and calls a transport's
``handle_async_request`` directly, skipping ``httpx.AsyncClient``'s per-request
machinery (auth, cookies, redirects, URL merging): nothing of it applies to a
proxy, and it costs more than the rest of the pipeline. The transport is:

- ``aiohttp`` (default): ``AiohttpTransport`` below, an ``httpx.AsyncBaseTransport``
  over one ``aiohttp.ClientSession`` per upstream. On one core it forwards about
  3x more requests per second than httpx's own pool (bench/README.md).
- ``httpx``: ``httpx.AsyncHTTPTransport`` (httpcore), kept for HTTP/2 upstreams
  and as a fallback.

Timeouts travel in ``request.extensions["timeout"]`` as in httpx
(``connect``/``read``/``write``/``pool``, seconds). Errors are httpx's
exception types, so callers never see aiohttp's.

The relay reads answers through the small ``UpstreamResponse`` Protocol (status,
headers, a byte stream, ``aread``, ``aclose``), which ``httpx.Response`` meets.
The aiohttp transport's ``send`` returns its own ``AiohttpResponse`` instead of
wrapping every answer in an ``httpx.Response``: the wrapper normalised and
copied every header and cost more than the rest of the transport's own work
(bench/README.md); ``handle_async_request`` stays for httpx's API.
``sender(transport)`` is what a deployment sends with.

Compression: the aiohttp transport asks every upstream for gzip
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
    "Sender",
    "UpstreamResponse",
    "build_transport",
    "post",
    "sender",
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
    if isinstance(transport, AiohttpTransport):
        return transport.send
    return transport.handle_async_request


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
        try:
            resp = await session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
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


def post(
    url: httpx.URL,
    headers: list[tuple[bytes, bytes]],
    content: bytes,
    extensions: dict[str, Any],
) -> httpx.Request:
    """A POST ``httpx.Request`` built the cheap way (about 4 µs instead of 13).

    ``headers`` are precomputed per deployment and must already hold ``host``;
    passing the body as a ``ByteStream`` skips httpx's body encoding and header
    merging, and ``read()`` makes ``request.content`` available to transports.
    """
    request = httpx.Request(
        "POST",
        url,
        headers=[*headers, (b"content-length", str(len(content)).encode())],
        stream=httpx.ByteStream(content),
        extensions=extensions,
    )
    request.read()
    return request


def build_transport(
    kind: str, *, pool_size: int, connect_timeout: float, read_timeout: float
) -> httpx.AsyncBaseTransport:
    """One transport per upstream, built at start-up."""
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
