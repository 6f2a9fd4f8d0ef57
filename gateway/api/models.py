"""GET /v1/models: config aliases, then each enabled provider's models.

Provider model lists are fetched from the upstream on first use and kept for
five minutes; an upstream that cannot list its models contributes nothing
rather than failing the whole listing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from litestar import Request, Response, get

from gateway.errors import GatewayError
from gateway.pipeline import relay
from gateway.providers.mock import MOCK_MODELS
from gateway.state import Gateway
from gateway.wire.models import ModelCard, ModelList, UpstreamModelList

log = logging.getLogger("gateway.models")
_TTL = 300.0
_decoder = msgspec.json.Decoder(UpstreamModelList)
_encode = msgspec.json.Encoder().encode


async def _provider_models(gw: Gateway, provider: str) -> list[ModelCard]:
    cached = gw.models_cache.get(provider)
    now = time.monotonic()
    if cached is not None and now - cached[0] < _TTL:
        return cached[1]  # type: ignore[no-any-return]
    cards: list[ModelCard] = []
    if provider == "mock":
        cards = [ModelCard(id=m, owned_by="mock") for m in MOCK_MODELS]
    else:
        try:
            dep = gw.registry.provider_deployment(provider)
            models_request = getattr(dep.adapter, "models_request", None)
            if models_request is not None:
                _resp, content = await relay.complete(dep, models_request(dep))
                listed = _decoder.decode(content).data
                cards = [
                    ModelCard(id=f"{provider}/{c.id}", owned_by=provider, created=c.created)
                    for c in listed
                ]
        except (GatewayError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning(
                "cannot list models",
                extra={"fields": {"provider": provider, "error": type(exc).__name__}},
            )
    gw.models_cache[provider] = (now, cards)
    return cards


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    gw: Gateway = request.app.state.gw
    cards = [ModelCard(id=alias, owned_by="gateway") for alias in gw.registry.groups]
    for provider in gw.registry.enabled():
        cards.extend(await _provider_models(gw, provider))
    return Response(_encode(ModelList(data=cards)), media_type="application/json")
