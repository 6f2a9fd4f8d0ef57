"""OpenAI ``/v1/embeddings`` request, validated; forwarded from the decoded dict."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from gateway.wire.chat import INT32_MAX

# A token id: no vocabulary is anywhere near 2^31.
TokenId = Annotated[int, Meta(ge=0, le=INT32_MAX)]
# A string, a list of strings, a list of token ids, or a list of token-id lists
# (msgspec unions take one list type, so the element type is the union).
EmbeddingInput = (
    str | Annotated[list[str | TokenId | list[TokenId]], Meta(min_length=1, max_length=2048)]
)


class EmbeddingsRequest(msgspec.Struct, kw_only=True, gc=False):
    model: Annotated[str, Meta(min_length=1, max_length=256)]
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Meta(ge=1, le=65536)] | None = None
    user: str | None = None
