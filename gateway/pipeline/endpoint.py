"""What an endpoint declares: the only part of the request path that differs per endpoint.

``pipeline/run.py`` runs the same stages for every endpoint; an ``Endpoint``
subclass (one per route, in ``api/``) says what is particular to it:

* ``request_type``: the wire Struct the body is validated against;
* ``errors``: the error shape, OpenAI's or Anthropic's (``ErrorShape``);
* ``cache_kind``: the response cache's kind (None: never cached); with it, how a
  stored answer is replayed to a streaming client and how a stream is assembled
  into an answer to store;
* ``limited``: whether the rate limits apply;
* ``stateful``: whether the request continues a stored conversation and its answer
  is stored (``/v1/responses``: stages ``conversation`` and ``remember``), and
  ``cacheable``: whether this request may use the cache (a stateful one may not);
* ``estimate``: the tokens a request may use (the limiter's reservation);
* ``exchange``: which adapter calls build the upstream request and read the answer
  for a deployment (``Exchange``); groups may mix providers, so this is per
  deployment;
* ``sizing``: the OpenAI-chat view of the body that routing by cost sizes.

Nothing here does I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import httpx

    from gateway.errors import GatewayError
    from gateway.pipeline.context import RequestContext
    from gateway.providers.base import Deployment, StreamTranslator
    from gateway.wire.chat import Usage

__all__ = ["Assembler", "Endpoint", "ErrorShape", "Exchange"]


class ErrorShape(Protocol):
    """How an endpoint's clients expect errors: a JSON body, and a stream's last event."""

    def body(self, err: GatewayError) -> bytes: ...

    def event(self, err: GatewayError) -> bytes: ...


class Exchange(Protocol):
    """One deployment's side of an endpoint: build the upstream request, read the answer."""

    def request(self, dep: Deployment, ctx: RequestContext) -> httpx.Request: ...

    def response(
        self, dep: Deployment, ctx: RequestContext, content: bytes
    ) -> tuple[bytes, Usage | None]: ...

    def translator(self, dep: Deployment, ctx: RequestContext) -> StreamTranslator: ...


class Assembler(Protocol):
    """Relayed stream frames in; the equivalent whole answer out (for the cache)."""

    def feed(self, frame: bytes) -> None: ...

    def result(self, usage: Usage | None) -> bytes | None: ...


class Endpoint:
    """Base declaration; subclasses set the class attributes and override the hooks."""

    name: ClassVar[str]  # route label, and the cache's kind
    path: ClassVar[str]
    request_type: ClassVar[type[Any]]
    errors: ClassVar[ErrorShape]
    cache_kind: ClassVar[str | None] = None
    limited: ClassVar[bool] = True
    streams: ClassVar[bool] = False
    stateful: ClassVar[bool] = False

    def model(self, request: Any) -> str:
        return str(request.model)

    def stream(self, request: Any) -> bool:
        return self.streams and bool(getattr(request, "stream", False))

    def sizing(self, ctx: RequestContext) -> dict[str, Any]:
        """The body as OpenAI chat, for sizing (lowest-cost routing, estimates)."""
        return ctx.body

    def estimate(self, ctx: RequestContext, dep: Deployment, default_max: int) -> tuple[int, int]:
        """(prompt, completion) tokens the request may use on ``dep`` (``default_max``:
        the completion to assume when the request sets no maximum)."""
        raise NotImplementedError

    def exchange(self, dep: Deployment) -> Exchange:
        raise NotImplementedError

    def local(self, ctx: RequestContext, dep: Deployment) -> bytes | None:
        """An answer the gateway gives itself for ``dep`` (no upstream call), or None."""
        return None

    # -- the response cache (only with a cache_kind) ------------------------------------

    def cacheable(self, ctx: RequestContext) -> bool:
        """Whether this request may be answered from (and stored in) the cache."""
        return True

    def replay(self, body: bytes, ctx: RequestContext) -> bytes:
        """A stored answer as the SSE stream a streaming client expects."""
        raise NotImplementedError

    def assembler(self) -> Assembler:
        raise NotImplementedError
