"""GET /v1/models: config aliases, then each enabled provider's models.

Provider model lists are fetched from the upstream on first use and kept for
five minutes; an upstream that cannot list its models contributes nothing
rather than failing the whole listing.
"""

from __future__ import annotations

import asyncio
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
_LIST_TIMEOUT = 5.0  # a slow provider must not hold the whole listing
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
            lister = dep.adapter.lister
            if lister is not None:
                async with asyncio.timeout(_LIST_TIMEOUT):
                    _resp, content = await relay.complete(dep, lister.models_request(dep))
                content = lister.models_response(dep, content)
                listed = _decoder.decode(content).data
                cards = [
                    ModelCard(id=f"{provider}/{c.id}", owned_by=provider, created=c.created)
                    for c in listed
                ]
        except (GatewayError, TimeoutError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning(
                "cannot list models",
                extra={"fields": {"provider": provider, "error": type(exc).__name__}},
            )
    gw.models_cache[provider] = (now, cards)
    return cards


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any], gw: Gateway) -> Response[bytes]:
    principal = await gw.auth.find(request.headers)  # 401 when keys are configured
    cards = [ModelCard(id=alias, owned_by="gateway") for alias in gw.registry.groups]
    listings = await asyncio.gather(*(_provider_models(gw, p) for p in gw.registry.enabled()))
    for listed in listings:
        cards.extend(listed)
    if principal.models is not None:  # a key limited to some models sees only those
        cards = [c for c in cards if c.id in principal.models]
    return Response(_encode(ModelList(data=cards)), media_type="application/json")
