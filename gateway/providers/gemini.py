"""Google Gemini (Developer API): generateContent, streamGenerateContent, embeddings.

URLs are ``{base}/models/{model}:generateContent``,
``:streamGenerateContent?alt=sse``, ``:embedContent`` and ``:batchEmbedContents``
(base defaults to ``.../v1beta``). The model name goes into the path, so it must
be one safe segment (``translate.common.path_segment``): a client-chosen
``gemini/../x`` or ``gemini/x?y`` is a 400 before anything is sent. The key goes
only in ``x-goog-api-key``, never in the URL. Translation lives in
``gateway/translate/``: ``gemini_request.py`` (chat requests),
``gemini_response.py`` (answers, streams, errors) and ``gemini_embeddings.py``
(embeddings and the model list).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from gateway.errors import GatewayError
from gateway.pipeline.retry_after import client_hints
from gateway.providers.base import Deployment, MessagesNative, ModelLister, ResponsesNative
from gateway.providers.openai import RETRY_HEADERS
from gateway.providers.transport import cached_head, post
from gateway.translate import gemini_embeddings, gemini_request, gemini_response
from gateway.translate.common import encode, path_segment
from gateway.wire.chat import Usage

PROVIDER = "gemini"


class GeminiAdapter:
    native_messages: MessagesNative | None = None  # /v1/messages is translated to chat
    native_responses: ResponsesNative | None = None  # /v1/responses too

    def __init__(self) -> None:
        self.lister: ModelLister | None = self

    name = PROVIDER

    def prepare(self, dep: Deployment) -> None:
        model = path_segment(dep.model.removeprefix("models/"), PROVIDER)
        root = f"{dep.base_url.rstrip('/')}/models/{model}"
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
        ]
        if dep.api_key is not None:
            headers.append((b"x-goog-api-key", dep.api_key.reveal().encode()))
        dep.cache.update(
            model=model,
            chat_url=httpx.URL(root + ":generateContent"),
            stream_url=httpx.URL(root + ":streamGenerateContent", params={"alt": "sse"}),
            embed_url=httpx.URL(root + ":embedContent"),
            batch_embed_url=httpx.URL(root + ":batchEmbedContents"),
            models_url=httpx.URL(dep.base_url.rstrip("/") + "/models", params={"pageSize": "1000"}),
            headers=headers,
            extensions={"timeout": dep.timeouts.extension()},
        )

    def _post(self, dep: Deployment, url_key: str, body: dict[str, Any]) -> httpx.Request:
        c = dep.cache
        return post(c[url_key], cached_head(c, url_key), encode(body), c["extensions"])

    def chat_request(self, dep: Deployment, body: dict[str, Any], stream: bool) -> httpx.Request:
        return self._post(
            dep, "stream_url" if stream else "chat_url", gemini_request.chat_to_gemini(body)
        )

    def chat_response(self, dep: Deployment, content: bytes) -> tuple[bytes, Usage | None]:
        return gemini_response.gemini_to_chat(content, dep.cache["model"])

    def chat_stream(self, dep: Deployment, include_usage: bool) -> gemini_response.GeminiStream:
        return gemini_response.GeminiStream(dep.cache["model"], include_usage)

    def embeddings_request(self, dep: Deployment, body: dict[str, Any]) -> httpx.Request:
        batch, payload = gemini_embeddings.embeddings_to_gemini(body, dep.cache["model"])
        return self._post(dep, "batch_embed_url" if batch else "embed_url", payload)

    def embeddings_response(
        self, dep: Deployment, body: dict[str, Any], content: bytes
    ) -> tuple[bytes, Usage | None]:
        return gemini_embeddings.gemini_embeddings_to_openai(content, dep.cache["model"], body)

    def models_request(self, dep: Deployment) -> httpx.Request:
        c = dep.cache
        return httpx.Request(
            "GET", c["models_url"], headers=c["headers"], extensions=c["extensions"]
        )

    def models_response(self, dep: Deployment, content: bytes) -> bytes:
        return gemini_embeddings.models_to_openai(content)

    def map_error(
        self, dep: Deployment, status: int, headers: Mapping[str, str], content: bytes
    ) -> GatewayError:
        keep = {k: headers[k] for k in RETRY_HEADERS if k in headers}
        key = dep.api_key.reveal() if dep.api_key is not None else None
        err = gemini_response.decode_error(content)
        mapped = gemini_response.map_status(status, err, keep, key)
        if status == 429:
            # RetryInfo.retryDelay arrives as retry-after: the client gets both forms
            mapped.headers = client_hints(mapped.headers)
        return mapped


__all__ = ["GeminiAdapter"]
