"""Anthropic Messages API: ``/v1/messages`` requests as validated, and views of answers.

Requests are validated against these Structs and forwarded (or translated) from
the decoded dict, so fields this gateway does not know still reach an Anthropic
upstream. The views read Anthropic answers and stream events leniently: unknown
fields and block types are skipped, never an error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from gateway.wire.chat import INT32_MAX, TokenCount

# -- requests ---------------------------------------------------------------------------


class ContentBlock(msgspec.Struct, kw_only=True, gc=False):
    type: Annotated[str, Meta(min_length=1)]
    text: str | None = None
    source: dict[str, Any] | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


class InputMessage(msgspec.Struct, kw_only=True, gc=False):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolDef(msgspec.Struct, kw_only=True, gc=False):
    name: Annotated[str, Meta(min_length=1, max_length=128)]
    type: str | None = None  # absent or "custom" for client tools; server tools are typed
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(msgspec.Struct, kw_only=True, gc=False):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(msgspec.Struct, kw_only=True, gc=False):
    """Extended thinking; only its integer is checked, the rest is the provider's."""

    type: str | None = None
    budget_tokens: TokenCount | None = None


class MessagesRequest(msgspec.Struct, kw_only=True, gc=False):
    model: Annotated[str, Meta(min_length=1, max_length=256)]
    messages: Annotated[list[InputMessage], Meta(min_length=1)]
    max_tokens: TokenCount
    system: str | list[ContentBlock] | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0, le=INT32_MAX)] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    metadata: dict[str, Any] | None = None
    thinking: Thinking | None = None
    output_config: dict[str, Any] | None = None


class CountTokensRequest(msgspec.Struct, kw_only=True, gc=False):
    model: Annotated[str, Meta(min_length=1, max_length=256)]
    messages: Annotated[list[InputMessage], Meta(min_length=1)]
    system: str | list[ContentBlock] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


# -- answers and stream events (views) --------------------------------------------------


class UsageView(msgspec.Struct, kw_only=True, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: dict[str, Any] | None = None


class BlockView(msgspec.Struct, kw_only=True, gc=False):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class MessageView(msgspec.Struct, kw_only=True, gc=False):
    id: str = ""
    model: str = ""
    content: list[BlockView] = []
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: UsageView | None = None


class DeltaView(msgspec.Struct, kw_only=True, gc=False):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None


class ErrorObject(msgspec.Struct, kw_only=True, gc=False):
    type: str = "api_error"
    message: str = ""


class EventView(msgspec.Struct, kw_only=True, gc=False):
    """One stream event; which fields are set depends on ``type``."""

    type: str
    message: MessageView | None = None
    index: int | None = None
    content_block: BlockView | None = None
    delta: DeltaView | None = None
    usage: UsageView | None = None
    error: ErrorObject | None = None


class ErrorView(msgspec.Struct, kw_only=True, gc=False):
    """``{"type":"error","error":{"type","message"},"request_id"}``."""

    type: str | None = None
    error: ErrorObject | None = None


class ErrorResponse(msgspec.Struct, kw_only=True, gc=False):
    """The error body ``/v1/messages`` sends its own clients."""

    type: str = "error"
    error: ErrorObject


class ModelInfoView(msgspec.Struct, kw_only=True, gc=False):
    id: str
    created_at: str | None = None
    display_name: str | None = None


class ModelListView(msgspec.Struct, kw_only=True, gc=False):
    data: list[ModelInfoView] = []


__all__ = [
    "BlockView",
    "ContentBlock",
    "CountTokensRequest",
    "DeltaView",
    "ErrorObject",
    "ErrorResponse",
    "ErrorView",
    "EventView",
    "InputMessage",
    "MessageView",
    "MessagesRequest",
    "ModelInfoView",
    "ModelListView",
    "Thinking",
    "ToolChoice",
    "ToolDef",
    "UsageView",
]
