"""``/v1/responses`` conversation state: two small stages around the pipeline, and the store.

Stage ``conversation`` (after ``auth``: the tenant is known) puts in
``ctx.conversation`` the stored conversation that ``previous_response_id`` ends
(its input and its output; nothing without one). The whole input, that history
then this request's items with each ``item_reference`` resolved, is made when
first used (``Conversation.items``), from the body as plugins left it: the rate
limiter sizes, and translated deployments send, that whole input. A
``previous_response_id`` this tenant did not store here is a 400
``previous_response_not_found``, whichever deployment serves: a response is
found only by the tenant that made it, and only through this gateway.

Stage ``remember`` (before ``respond``) keeps the answer when ``store`` is not
false: one record per response id, ``{"v", "origin", "input", "response"}``
(``input`` is the whole input the response answered), under
``gw:{<tenant>}:resp:<id>`` with the configured TTL. A whole answer is stored
before it is sent; a stream when its terminal event has been read and before
that event is sent, so a client that continues at once finds it. Either way a
store that fails is counted and logged and the answer goes out as it is.
It also binds the stream's error event to what the client was sent
(``ResponsesAssembler``), so a stream that breaks ends with ``error`` and
``response.failed`` numbered after the last event, with the same response id.

``origin`` names where a response was made: ``gateway`` for a translation, a
digest of (provider, base URL, key) for an upstream that keeps its own state.
A follow-up passed through to the same upstream keeps ``previous_response_id``
(the upstream has the conversation); any other deployment gets the expanded
input instead (``passthrough_body``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.errors import InvalidRequest, ServiceUnavailable, UnsupportedParameter
from gateway.pipeline.cache_entry import tag
from gateway.store.cache import CacheUnavailable
from gateway.store.responses import MemoryResponseStore, ResponseStore
from gateway.telemetry import metrics
from gateway.translate.common import encode
from gateway.translate.responses_events import ResponsesAssembler
from gateway.translate.responses_request import expand, input_items, portable
from gateway.wire.responses import ResponseView

if TYPE_CHECKING:
    from gateway.config import ResponsesOptions
    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.endpoint import Endpoint
    from gateway.pipeline.reply import Reply
    from gateway.providers.base import Deployment
    from gateway.store.base import StateBackend

__all__ = [
    "Conversation",
    "Conversations",
    "Recall",
    "Remember",
    "origin",
    "passthrough_body",
    "valid_id",
]

log = logging.getLogger("gateway.responses")
GATEWAY = "gateway"  # the origin of a response the gateway translated
_VERSION = 1
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # the ids a key may hold (as ResponseId in wire/)
OPS = ("load", "save", "get", "delete")
RESULTS = ("ok", "missing", "error", "too_large")


class Record(msgspec.Struct):
    v: int
    origin: str
    input: list[dict[str, Any]]
    response: msgspec.Raw


class _Output(msgspec.Struct):
    output: list[dict[str, Any]] = []


_record_decoder = msgspec.json.Decoder(Record)
_output_decoder = msgspec.json.Decoder(_Output)
_response_decoder = msgspec.json.Decoder(ResponseView)


@dataclass(slots=True)
class Conversation:
    """What a request continues: the stored conversation ``previous_response_id`` ends
    (``history``, empty without one) and where that response was made (``origin``)."""

    history: list[dict[str, Any]]
    origin: str | None  # None without previous_response_id
    _items: list[dict[str, Any]] | None = None

    def items(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The whole input: the history, then the request's ``input`` as the body holds it
        when first asked (after any plugin rewrote it), item references resolved."""
        if self._items is None:
            self._items = expand(self.history, input_items(body.get("input")))
        return self._items


def origin(dep: Deployment) -> str:
    """Where a response ``dep`` makes lives: ``gateway``, or a digest naming the upstream
    account that keeps it (never the key itself)."""
    if dep.responses != "passthrough":
        return GATEWAY
    found = dep.cache.get("responses_origin")
    if found is None:
        key = dep.api_key.reveal() if dep.api_key is not None else ""
        ident = f"{dep.provider}\0{dep.base_url}\0{key}".encode()
        found = dep.cache["responses_origin"] = hashlib.sha256(ident).hexdigest()[:16]
    return str(found)


def passthrough_body(ctx: RequestContext, dep: Deployment) -> dict[str, Any]:
    """The body for a Responses upstream: as the client sent it, unless it continues a
    response made elsewhere; then the whole conversation, ``previous_response_id`` gone."""
    conv = ctx.conversation
    body = ctx.body
    if conv is None or conv.origin is None or conv.origin == origin(dep):
        return body
    out = {k: v for k, v in body.items() if k != "previous_response_id"}
    out["input"] = portable(conv.items(body))
    return out


def _count(op: str, result: str) -> None:
    metrics.gateway_responses_state_total.labels(op, result).inc()


def _unavailable(op: str) -> ServiceUnavailable:
    _count(op, "error")
    return ServiceUnavailable(
        "Stored responses are unavailable right now; retry shortly", code="state_unavailable"
    )


class Conversations:
    """The process's handle on the conversation store (the state backend's, once started)."""

    def __init__(self, options: ResponsesOptions, timeout_s: float) -> None:
        self.ttl_ms = options.ttl * 1000
        self.max_bytes = options.max_record_bytes
        self.timeout_s = timeout_s
        self.store: ResponseStore = MemoryResponseStore()
        for op in OPS:
            for result in RESULTS:
                metrics.gateway_responses_state_total.labels(op, result)

    async def start(self, backend: StateBackend) -> None:
        self.store = backend.response_store(self.timeout_s)

    @staticmethod
    def key(tenant: str, response_id: str) -> str:
        return f"gw:{{{tag(tenant)}}}:resp:{response_id}"

    async def _read(self, tenant: str, response_id: str, op: str) -> Record | None:
        """The record of ``response_id``, its ``input`` extended by the response's output
        (the whole conversation it ends); None when there is none this version reads."""
        try:
            raw = await self.store.get(self.key(tenant, response_id))
        except CacheUnavailable as exc:
            raise _unavailable(op) from exc
        record = None
        if raw is not None:
            try:
                record = _record_decoder.decode(raw)
                history = _output_decoder.decode(record.response).output
            except (msgspec.DecodeError, msgspec.ValidationError):
                record = None  # not written by this version: as if absent
        if record is None or record.v != _VERSION:
            _count(op, "missing")
            return None
        _count(op, "ok")
        record.input = record.input + history  # the whole conversation it ends
        return record

    async def response(self, tenant: str, response_id: str) -> bytes | None:
        """A stored response object (``GET /v1/responses/{id}``)."""
        record = await self._read(tenant, response_id, "get")
        return bytes(record.response) if record is not None else None

    async def delete(self, tenant: str, response_id: str) -> bool:
        try:
            found = await self.store.delete(self.key(tenant, response_id))
        except CacheUnavailable as exc:
            raise _unavailable("delete") from exc
        _count("delete", "ok" if found else "missing")
        return found

    async def recall(self, tenant: str, previous: str) -> Conversation:
        record = await self._read(tenant, previous, "load")
        if record is None:
            raise InvalidRequest(
                f"Previous response with id '{previous}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return Conversation(record.input, record.origin)

    async def save(self, tenant: str, items: list[dict[str, Any]], where: str, body: bytes) -> None:
        """Keep ``body`` (a response) with ``items``, the input it answered; never raises."""
        try:
            view = _response_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # not a response object: nothing a client could continue from
        response_id = view.id
        if not valid_id(response_id):
            return  # an upstream's id that could not be looked up safely: not kept
        head = encode({"v": _VERSION, "origin": where, "input": items})
        record = head[:-1] + b',"response":' + body + b"}"
        if len(record) > self.max_bytes:
            _count("save", "too_large")
            log.warning(
                "response not stored: record too large",
                extra={"fields": {"bytes": len(record), "limit": self.max_bytes}},
            )
            return
        try:
            await self.store.put(self.key(tenant, response_id), record, self.ttl_ms)
        except CacheUnavailable as exc:
            _count("save", "error")
            log.warning("response not stored", extra={"fields": {"reason": str(exc)}})
            return
        _count("save", "ok")


def valid_id(text: str) -> bool:
    """Whether ``text`` can be a stored response's id (plain text, at most 128 chars)."""
    return _ID.fullmatch(text) is not None


# -- the stages ---------------------------------------------------------------------------


def _tenant(ctx: RequestContext) -> str:
    principal = ctx.principal
    assert principal is not None
    return principal.tenant


class Recall:
    """Stage ``conversation``: ``ctx.conversation`` for stateful endpoints."""

    name = "conversation"

    def __init__(self, conversations: Conversations) -> None:
        self.conversations = conversations

    def applies(self, endpoint: Endpoint) -> bool:
        return endpoint.stateful

    async def __call__(self, ctx: RequestContext) -> Reply | None:
        endpoint = ctx.endpoint
        if endpoint is None or not endpoint.stateful:
            return None
        request = ctx.request
        if request.background:
            raise UnsupportedParameter(
                "`background`: background responses are not supported by this gateway",
                param="background",
            )
        if request.conversation is not None:
            raise UnsupportedParameter(
                "`conversation`: conversation objects are not served by this gateway; "
                "continue with previous_response_id",
                param="conversation",
            )
        previous = request.previous_response_id
        if previous is None:
            conv = Conversation([], None)
        else:
            conv = await self.conversations.recall(_tenant(ctx), previous)
        # Item references checked now (a 400 before any quota is taken); the whole input
        # itself is made when first used, from the body as the plugins left it.
        expand(conv.history, input_items(ctx.body.get("input")))
        ctx.conversation = conv
        return None


class _Saving:
    """A committed stream whose response is stored before its terminal event is sent."""

    __slots__ = ("_relay", "_save", "_watch")

    def __init__(
        self,
        relay: Any,
        watch: ResponsesAssembler,
        save: Callable[[bytes, Deployment], Awaitable[None]],
    ) -> None:
        self._relay = relay
        self._watch = watch
        self._save = save

    async def frames(self) -> AsyncIterator[bytes]:
        watch = self._watch
        saved = False
        async with aclosing(self._relay.frames()) as frames:
            async for frame in frames:
                if not saved and watch.final is not None:
                    saved = True
                    await self._save(watch.final, self._relay.dep)
                yield frame

    @property
    def last(self) -> bool:  # the relay's frames pass through as they are
        return bool(getattr(self._relay, "last", False))

    async def aclose(self) -> None:
        await self._relay.aclose()


class Remember:
    """Stage ``remember``: store the answer, bind a stream's error event (see above)."""

    name = "remember"

    def __init__(self, conversations: Conversations) -> None:
        self.conversations = conversations

    def applies(self, endpoint: Endpoint) -> bool:
        return endpoint.stateful

    async def __call__(self, ctx: RequestContext) -> Reply | None:
        endpoint, served, conv = ctx.endpoint, ctx.served, ctx.conversation
        if endpoint is None or not endpoint.stateful or served is None or conv is None:
            return None
        keep = ctx.request.store is not False and served.attempts > 0
        tenant = _tenant(ctx)
        conversations = self.conversations

        async def save(body: bytes, dep: Deployment) -> None:
            await conversations.save(tenant, conv.items(ctx.body), origin(dep), body)

        if not ctx.stream:
            if keep:
                await save(served.result[0], served.dep)
            return None
        relay = served.result
        watch = ResponsesAssembler()
        relay.observe(watch.feed)
        relay.error_event = watch.failure
        if keep:
            served.result = _Saving(relay, watch, save)
        return None
