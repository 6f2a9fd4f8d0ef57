"""``/v1/responses``: OpenAI's Responses API in front of every provider.

What the endpoint declares; the pipeline (``pipeline/run.py``) does the rest, with
two stages of its own (``pipeline/conversation.py``: the stored conversation is
recalled after ``auth`` and the answer stored before ``respond``).

* A deployment that serves the Responses API (``Deployment.responses ==
  "passthrough"``: OpenAI, Azure's v1 or recent dated API, unless the config says
  ``responses: translate``) gets the body as it came, only ``model`` replaced; a
  follow-up to a response another upstream (or a translation) made gets the whole
  conversation instead of ``previous_response_id``.
* Any other (Anthropic, Gemini, the mock, OpenAI-compatible chat-only servers) gets
  it translated to OpenAI chat (``translate/responses_request.py``), then to its
  own format by its adapter; the answer comes back as a ``response`` object or the
  Responses event sequence (``responses_response.py``, ``responses_stream.py``).
* Routing and the rate limiter size the request by the chat view of its whole
  input, stored conversation included.
* Identical stateless requests (no ``previous_response_id``) are cached: the
  ``response`` JSON, replayed as events to a streaming client.
* ``GET /v1/responses/{id}`` (``?stream=true`` replays it as events) and
  ``DELETE /v1/responses/{id}`` read and delete the caller's own stored responses;
  another tenant's are a 404, as are ids never stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request, Response, delete, get

from gateway.errors import GatewayError, NotFound
from gateway.pipeline.context import SCOPE_KEY, RequestContext
from gateway.pipeline.conversation import passthrough_body, valid_id
from gateway.pipeline.endpoint import Endpoint
from gateway.pipeline.shapes import RESPONSES
from gateway.state import Gateway
from gateway.tokencount import chat_estimate
from gateway.translate.common import encode
from gateway.translate.responses_events import ResponsesAssembler, response_frames
from gateway.translate.responses_request import responses_to_chat
from gateway.translate.responses_response import chat_to_response, skeleton
from gateway.translate.responses_stream import ResponsesEventStream
from gateway.wire.responses import ResponsesRequest

if TYPE_CHECKING:
    import httpx

    from gateway.providers.base import Deployment, ResponsesNative, StreamTranslator
    from gateway.wire.chat import Usage

ITEM_ROUTE = "/v1/responses/{id}"  # the route label of GET and DELETE


def _items(ctx: RequestContext) -> list[dict[str, Any]]:
    conv = ctx.conversation
    assert conv is not None  # stage ``conversation`` ran
    return conv.items(ctx.body)


def chat_view(ctx: RequestContext) -> dict[str, Any]:
    """The request as OpenAI chat, whole conversation included, for sizing (made once per
    request); one only OpenAI can take (built-in tools, say) is sized by its text."""
    view = ctx.view
    if view is None:
        try:
            view = responses_to_chat(ctx.body, _items(ctx), False, "openai")
        except GatewayError:
            text = encode(_items(ctx)).decode()
            view = {"model": ctx.model, "messages": [{"role": "user", "content": text}]}
            view["max_completion_tokens"] = ctx.body.get("max_output_tokens")
        ctx.view = view
    return view


class PassthroughExchange:
    """An upstream that serves the Responses API: the body passes through."""

    def __init__(self, native: ResponsesNative) -> None:
        self.native = native

    def request(self, dep: Deployment, ctx: RequestContext) -> httpx.Request:
        return self.native.responses_request(dep, passthrough_body(ctx, dep), ctx.stream)

    def response(
        self, dep: Deployment, ctx: RequestContext, content: bytes
    ) -> tuple[bytes, Usage | None]:
        return self.native.responses_response(dep, content)

    def translator(self, dep: Deployment, ctx: RequestContext) -> StreamTranslator:
        return self.native.responses_stream(dep)


class TranslatedExchange:
    """Any other upstream: Responses -> OpenAI chat -> the adapter, and back."""

    def request(self, dep: Deployment, ctx: RequestContext) -> httpx.Request:
        chat = responses_to_chat(ctx.body, _items(ctx), ctx.stream, dep.provider)
        return dep.adapter.chat_request(dep, chat, ctx.stream)

    def response(
        self, dep: Deployment, ctx: RequestContext, content: bytes
    ) -> tuple[bytes, Usage | None]:
        chat, usage = dep.adapter.chat_response(dep, content)
        return chat_to_response(chat, skeleton(ctx.body, ctx.model), dep.provider), usage

    def translator(self, dep: Deployment, ctx: RequestContext) -> StreamTranslator:
        inner = dep.adapter.chat_stream(dep, True)
        return ResponsesEventStream(inner, skeleton(ctx.body, ctx.model))


_TRANSLATED = TranslatedExchange()


class Responses(Endpoint):
    name = "responses"
    path = "/v1/responses"
    request_type = ResponsesRequest
    errors = RESPONSES
    cache_kind = "responses"
    streams = True
    stateful = True

    def cacheable(self, ctx: RequestContext) -> bool:
        return ctx.request.previous_response_id is None

    def sizing(self, ctx: RequestContext) -> dict[str, Any]:
        return chat_view(ctx)

    def estimate(self, ctx: RequestContext, dep: Deployment, default_max: int) -> tuple[int, int]:
        return chat_estimate(chat_view(ctx), dep.model, default_max)

    def exchange(self, dep: Deployment) -> PassthroughExchange | TranslatedExchange:
        native = dep.adapter.native_responses
        if dep.responses == "passthrough" and native is not None:
            return PassthroughExchange(native)
        return _TRANSLATED

    def replay(self, body: bytes, ctx: RequestContext) -> bytes:
        return response_frames(body)

    def assembler(self) -> ResponsesAssembler:
        return ResponsesAssembler()


RESPONSES_ENDPOINT = Responses()


# -- GET and DELETE /v1/responses/{id} (Litestar handlers, the Gateway by DI) ------------


def _tenant(request: Request[Any, Any, Any], gw: Gateway) -> str:
    ctx = request.scope.get(SCOPE_KEY)
    if isinstance(ctx, RequestContext):
        ctx.route = ITEM_ROUTE  # one bounded label for every id
    return gw.auth.principal(request.headers).tenant  # 401 when keys are configured


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id[:128]}' not found.", param="response_id")


@get("/v1/responses/{response_id:str}")
async def retrieve_response(
    request: Request[Any, Any, Any], gw: Gateway, response_id: str
) -> Response[bytes]:
    tenant = _tenant(request, gw)
    body = await gw.conversations.response(tenant, response_id) if valid_id(response_id) else None
    if body is None:
        raise _not_found(response_id)
    if request.query_params.get("stream") in ("true", "1"):
        return Response(response_frames(body), media_type="text/event-stream")
    return Response(body, media_type="application/json")


@delete("/v1/responses/{response_id:str}", status_code=200)
async def delete_response(
    request: Request[Any, Any, Any], gw: Gateway, response_id: str
) -> Response[bytes]:
    tenant = _tenant(request, gw)
    if not valid_id(response_id) or not await gw.conversations.delete(tenant, response_id):
        raise _not_found(response_id)
    body = encode({"id": response_id, "object": "response", "deleted": True})
    return Response(body, media_type="application/json")
