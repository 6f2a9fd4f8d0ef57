"""Azure OpenAI: OpenAI's wire format at Azure's URLs, with the ``api-key`` header.

Which API a deployment uses is decided once, in ``prepare``:
- **v1 API** when the deployment's ``api_version`` (or ``AZURE_API_VERSION``) is
  ``v1`` or ``preview``, or when the base URL ends in ``/openai/v1``:
  ``{resource}/openai/v1/chat/completions`` with the deployment name in ``model``
  (``preview`` adds ``?api-version=preview``).
- **dated API** otherwise: ``{resource}/openai/deployments/{deployment}/chat/completions
  ?api-version=<api_version or 2024-10-21>`` (the GA version in the REST reference).
  The deployment name is a URL path segment, so it must be one safe segment.
The base URL may be the resource root (``https://r.openai.azure.com``) or end in
``/openai`` or ``/openai/v1``. Both APIs take the key as ``api-key``.

Bodies pass through as for OpenAI (``stream_options.include_usage`` forced on so
the gateway can count tokens). Streams drop what only Azure sends: the leading
``prompt_filter_results`` chunk with no choices and the content-filter annotation
choices without ``delta`` (which may come after the finish chunk).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import httpx
import msgspec

from gateway.errors import GatewayError
from gateway.pipeline.retry_after import hint_headers
from gateway.providers.base import Deployment
from gateway.providers.openai import DONE_FRAME, OpenAIAdapter, map_openai_error, stream_error
from gateway.sse_write import event, json_event
from gateway.translate.common import encode, path_segment
from gateway.translate.upstream import SSEStream, decode_event, ended_early
from gateway.wire.chat import Usage

PROVIDER = "azure"
DEFAULT_API_VERSION = "2024-10-21"
# The first dated api-version with the Responses API (``/openai/responses``).
RESPONSES_API_VERSION = "2025-03-01-preview"
V1_VERSIONS = frozenset({"v1", "preview"})
_RETRY_IN_TEXT = re.compile(r"retry after (\d{1,5}) seconds?", re.IGNORECASE)


_ABSENT = msgspec.Raw(b"")  # msgspec cannot decode ``Raw | None``; empty means absent


class _Choice(msgspec.Struct, gc=False):
    delta: msgspec.Raw = _ABSENT
    finish_reason: str | None = None


class _Chunk(msgspec.Struct, gc=False):
    choices: list[_Choice] | None = None
    usage: Usage | None = None
    error: msgspec.Raw = _ABSENT


_chunk_decoder = msgspec.json.Decoder(_Chunk)


def _root(base: str) -> str:
    base = base.rstrip("/")
    for suffix in ("/openai/v1", "/openai"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def uses_v1(dep: Deployment) -> bool:
    version = (dep.api_version or "").strip().lower()
    return version in V1_VERSIONS or dep.base_url.rstrip("/").endswith("/openai/v1")


class AzureStream(SSEStream):
    """Azure's OpenAI-format stream relayed, minus Azure-only filter chunks."""

    __slots__ = ("_finished", "_include_usage")

    def __init__(self, include_usage: bool) -> None:
        super().__init__(PROVIDER)
        self._include_usage = include_usage
        self._finished = False

    def _event(self, _etype: str, data: str, frames: list[bytes]) -> None:
        if data == "[DONE]":
            self.done = True
            frames.append(DONE_FRAME)
            return
        if self.done:
            return
        view = decode_event(_chunk_decoder, data, PROVIDER)
        if len(view.error) and bytes(view.error) != b"null":
            raise stream_error(PROVIDER, view.error)
        choices = view.choices or []
        if view.usage is not None:
            self.usage = view.usage
            if not choices and not self._include_usage:
                return  # the usage-only chunk the client did not ask for
        elif not choices:
            return  # prompt_filter_results, or an empty annotation chunk
        if any(c.finish_reason is not None for c in choices):
            self._finished = True
        if all(len(c.delta) for c in choices):
            frames.append(json_event(data))
            return
        # Annotation choices (content_filter_offsets, no delta): drop them, keep the rest.
        obj = msgspec.json.decode(data)
        obj["choices"] = [c for c in obj["choices"] if isinstance(c, dict) and "delta" in c]
        if obj["choices"] or obj.get("usage") is not None:
            frames.append(event(encode(obj)))

    def _end_of_body(self) -> list[bytes]:
        if self.done:
            return []
        if self._finished:
            self.done = True
            return [DONE_FRAME]
        raise ended_early(PROVIDER, "it was complete")


class AzureAdapter(OpenAIAdapter):
    def __init__(self) -> None:
        super().__init__(PROVIDER)
        # Deployments are not listed: Azure's model list names base models, not the
        # deployment names clients must send (configured aliases are listed instead).
        self.lister = None

    def prepare(self, dep: Deployment) -> None:
        root = _root(dep.base_url)
        version = (dep.api_version or "").strip()
        params: dict[str, str] = {}
        if uses_v1(dep):
            prefix = root + "/openai/v1"
            if version.lower() == "preview":
                params["api-version"] = "preview"
            responses = httpx.URL(prefix + "/responses", params=params)
        else:
            deployment = path_segment(dep.model, PROVIDER, "deployment")
            prefix = f"{root}/openai/deployments/{deployment}"
            params["api-version"] = version or DEFAULT_API_VERSION
            # The Responses API is not per deployment: the deployment name goes in ``model``.
            responses = httpx.URL(root + "/openai/responses", params=params)
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
        ]
        if dep.api_key is not None:
            headers.append((b"api-key", dep.api_key.reveal().encode()))
        dep.cache.update(
            chat_url=httpx.URL(prefix + "/chat/completions", params=params),
            embeddings_url=httpx.URL(prefix + "/embeddings", params=params),
            responses_url=responses,
            headers=headers,
            extensions={"timeout": dep.timeouts.extension()},
        )

    def serves_responses(self, dep: Deployment) -> bool:
        """The v1 API serves it; a dated API from ``RESPONSES_API_VERSION`` on."""
        version = (dep.api_version or DEFAULT_API_VERSION).strip().lower()
        return uses_v1(dep) or version >= RESPONSES_API_VERSION[:10]

    def chat_stream(self, dep: Deployment, include_usage: bool) -> AzureStream:  # type: ignore[override]
        return AzureStream(include_usage)

    def map_error(
        self, dep: Deployment, status: int, headers: Mapping[str, str], content: bytes
    ) -> GatewayError:
        err = map_openai_error(PROVIDER, status, headers, _normalized_error(content))
        if status == 429 and "retry-after" not in err.headers:
            # Azure often says it only in the text: "... Please retry after 12 seconds."
            m = _RETRY_IN_TEXT.search(err.message)
            if m:
                err.headers.update(hint_headers(float(m.group(1))))
        return err


def _normalized_error(content: bytes) -> bytes:
    """Azure's error body in OpenAI's exact shape: Azure omits ``type`` and may send
    ``code`` as a number, which the strict OpenAI view would reject outright."""
    try:
        body = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return content
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return content
    code, param = err.get("code"), err.get("param")
    return encode(
        {
            "error": {
                "message": str(err.get("message") or ""),
                "type": str(err.get("type") or ""),
                "param": param if isinstance(param, str) else None,
                "code": str(code) if code is not None else None,
            }
        }
    )


__all__ = ["DEFAULT_API_VERSION", "AzureAdapter", "AzureStream", "uses_v1"]
