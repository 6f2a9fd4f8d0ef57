"""POST /v1/embeddings: what the embeddings endpoint declares; the pipeline does the rest.

Validated as an ``EmbeddingsRequest``, forwarded (OpenAI, Azure) or translated
(Gemini); Anthropic has no embeddings API (400). Never streamed; cached when the
alias caches. Errors have OpenAI's shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.pipeline.endpoint import Endpoint
from gateway.pipeline.shapes import OPENAI
from gateway.tokencount import count_text_tokens
from gateway.wire.embeddings import EmbeddingsRequest

if TYPE_CHECKING:
    import httpx

    from gateway.pipeline.context import RequestContext
    from gateway.providers.base import Deployment, StreamTranslator
    from gateway.wire.chat import Usage


class EmbeddingsExchange:
    def request(self, dep: Deployment, ctx: RequestContext) -> httpx.Request:
        return dep.adapter.embeddings_request(dep, ctx.body)

    def response(
        self, dep: Deployment, ctx: RequestContext, content: bytes
    ) -> tuple[bytes, Usage | None]:
        return dep.adapter.embeddings_response(dep, ctx.body, content)

    def translator(self, dep: Deployment, ctx: RequestContext) -> StreamTranslator:
        raise NotImplementedError("embeddings are never streamed")


_EXCHANGE = EmbeddingsExchange()


class Embeddings(Endpoint):
    name = "embeddings"
    path = "/v1/embeddings"
    request_type = EmbeddingsRequest
    errors = OPENAI
    cache_kind = "embeddings"

    def estimate(self, ctx: RequestContext, dep: Deployment, default_max: int) -> tuple[int, int]:
        return count_text_tokens(ctx.body.get("input") or "", dep.model), 0

    def exchange(self, dep: Deployment) -> EmbeddingsExchange:
        return _EXCHANGE


EMBEDDINGS = Embeddings()
