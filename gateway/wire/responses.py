"""OpenAI ``/v1/responses``: the request as validated, and views of answers and events.

Like chat, the request is validated against ``ResponsesRequest`` but forwarded
(to an upstream that serves the Responses API) from the decoded dict, so fields
this gateway does not know yet still reach it. Input items, tools and formats
keep growing in OpenAI's API, so they are checked where they are translated
(``translate/responses_request.py``, errors naming ``input[i]...``), not here;
what is checked here is what is certainly a mistake whatever the provider.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from gateway.wire.chat import TokenCount

# Ids the gateway looks up in its own store (and puts in Redis keys): plain text only.
ResponseId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
MetadataKey = Annotated[str, Meta(max_length=64)]
MetadataValue = Annotated[str, Meta(max_length=512)]


class ToolView(msgspec.Struct, kw_only=True, gc=False):
    """Every tool has a type; a function tool also a name (the rest is checked where used)."""

    type: Annotated[str, Meta(min_length=1, max_length=64)]
    name: Annotated[str, Meta(min_length=1, max_length=128)] | None = None


class TextConfig(msgspec.Struct, kw_only=True, gc=False):
    format: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(msgspec.Struct, kw_only=True, gc=False):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesRequest(msgspec.Struct, kw_only=True, gc=False):
    model: Annotated[str, Meta(min_length=1, max_length=256)]
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    previous_response_id: ResponseId | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    tools: list[ToolView] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    max_output_tokens: TokenCount | None = None
    max_tool_calls: TokenCount | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Meta(max_length=16)] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt: dict[str, Any] | None = None


# -- views of answers (only what the gateway reads; the rest is skipped unparsed) --------


class InputTokensDetails(msgspec.Struct, gc=False):
    cached_tokens: int = 0


class OutputTokensDetails(msgspec.Struct, gc=False):
    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct, gc=False):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: InputTokensDetails | None = None
    output_tokens_details: OutputTokensDetails | None = None


class ResponseView(msgspec.Struct, gc=False):
    """A ``response`` object: its id, its status and its usage."""

    id: str = ""
    status: str | None = None
    usage: ResponseUsage | None = None


class EventView(msgspec.Struct, gc=False):
    """One Responses stream event; ``response`` and ``item`` stay raw until needed."""

    type: str = ""
    sequence_number: int | None = None
    response: msgspec.Raw = msgspec.Raw(b"")
    item: msgspec.Raw = msgspec.Raw(b"")
    output_index: int | None = None
    message: str | None = None  # the ``error`` event
    code: str | None = None
    param: str | None = None


__all__ = [
    "EventView",
    "ReasoningConfig",
    "ResponseId",
    "ResponseUsage",
    "ResponseView",
    "ResponsesRequest",
    "TextConfig",
    "ToolView",
]
