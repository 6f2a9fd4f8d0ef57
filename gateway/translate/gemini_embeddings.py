"""OpenAI embeddings <-> Gemini embedContent / batchEmbedContents, and Gemini's model list.

One text is ``:embedContent``, a list of texts ``:batchEmbedContents``; token
arrays are a 400. ``encoding_format: base64`` packs the floats little-endian, as
OpenAI does. Gemini may send no usage: the prompt tokens are then estimated
from the text (a quarter of its characters, at least one per input).
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import msgspec

from gateway.translate.common import encode, unsupported
from gateway.translate.gemini_response import PROVIDER, UsageMetadata
from gateway.translate.upstream import decode_body
from gateway.wire.chat import Usage


class _Embedding(msgspec.Struct, kw_only=True):
    values: list[float] = []


class _EmbedResponse(msgspec.Struct, kw_only=True, rename="camel"):
    embedding: _Embedding | None = None
    embeddings: list[_Embedding] | None = None
    usage_metadata: UsageMetadata | None = None


class _Model(msgspec.Struct, kw_only=True):
    name: str


class _ModelList(msgspec.Struct, kw_only=True):
    models: list[_Model] = []


_embed_decoder = msgspec.json.Decoder(_EmbedResponse)
_models_decoder = msgspec.json.Decoder(_ModelList)


# -- embeddings -------------------------------------------------------------------------


def embeddings_to_gemini(body: dict[str, Any], model: str) -> tuple[bool, dict[str, Any]]:
    """(batch?, body) for ``:batchEmbedContents`` or ``:embedContent``."""
    inputs = body.get("input")
    texts: list[str]
    if isinstance(inputs, str):
        texts = [inputs]
    elif isinstance(inputs, list) and inputs and all(isinstance(x, str) for x in inputs):
        texts = inputs
    else:
        raise unsupported("input", PROVIDER, "token arrays; send text")
    extra: dict[str, Any] = {}
    dims = body.get("dimensions")
    if dims:
        extra["outputDimensionality"] = dims
    task = body.get("task_type")
    if isinstance(task, str):
        extra["taskType"] = task
    if isinstance(inputs, str):
        return False, {"content": {"parts": [{"text": inputs}]}, **extra}
    return True, {
        "requests": [
            {"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **extra}
            for t in texts
        ]
    }


def _texts(body: dict[str, Any]) -> list[str]:
    inputs = body.get("input")
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, list):
        return [x for x in inputs if isinstance(x, str)]
    return []


def gemini_embeddings_to_openai(
    content: bytes, model: str, body: dict[str, Any]
) -> tuple[bytes, Usage]:
    """Gemini's answer to the OpenAI request ``body`` (its ``encoding_format``; its size
    is the token count when Gemini reports none)."""
    r = decode_body(
        _embed_decoder, content, PROVIDER, "returned an embeddings body that is not valid JSON"
    )
    vectors = [r.embedding] if r.embedding is not None else (r.embeddings or [])
    fmt = body.get("encoding_format") or "float"
    estimate = sum(max(1, len(t) // 4) for t in _texts(body))
    data = []
    for i, e in enumerate(vectors):
        emb: Any = e.values
        if fmt == "base64":
            emb = base64.b64encode(struct.pack(f"<{len(e.values)}f", *e.values)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = r.usage_metadata.prompt_token_count if r.usage_metadata else estimate
    usage = Usage(prompt_tokens=tokens, total_tokens=tokens)
    out = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return encode(out), usage


def models_to_openai(content: bytes) -> bytes:
    listed = decode_body(
        _models_decoder, content, PROVIDER, "returned a model list that is not valid JSON"
    ).models
    data = [
        {
            "id": m.name.removeprefix("models/"),
            "object": "model",
            "created": 0,
            "owned_by": PROVIDER,
        }
        for m in listed
    ]
    return encode({"object": "list", "data": data})


__all__ = ["embeddings_to_gemini", "gemini_embeddings_to_openai", "models_to_openai"]
