"""OpenAI ``/v1/chat/completions``: the request as validated, and views of responses.

Requests are validated against these Structs but forwarded from the decoded
dict, so fields this gateway does not know yet still reach the provider. The
Structs are deliberately tolerant where OpenAI keeps adding shapes (content
parts, response formats) and strict where a wrong type is certainly a mistake.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]

# Integers a client sends are bounded where they are declared: no provider takes a token
# count past 2^31 - 1, and a 10^30 must be a 400 naming the field, not forwarded.
INT32_MAX = 2**31 - 1
TokenCount = Annotated[int, Meta(ge=1, le=INT32_MAX)]


class ContentPart(msgspec.Struct, kw_only=True, gc=False):
    type: Annotated[str, Meta(min_length=1)]
    text: str | None = None
    image_url: dict[str, Any] | None = None
    input_audio: dict[str, Any] | None = None
    file: dict[str, Any] | None = None
    refusal: str | None = None


class FunctionCall(msgspec.Struct, kw_only=True, gc=False):
    name: str
    arguments: str


class ToolCall(msgspec.Struct, kw_only=True, gc=False):
    id: str
    type: str = "function"
    function: FunctionCall


class Message(msgspec.Struct, kw_only=True, gc=False):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class FunctionDef(msgspec.Struct, kw_only=True, gc=False):
    name: Annotated[str, Meta(min_length=1, max_length=128)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, kw_only=True, gc=False):
    type: str = "function"
    function: FunctionDef | None = None


class StreamOptions(msgspec.Struct, kw_only=True, gc=False):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ResponseFormat(msgspec.Struct, kw_only=True, gc=False):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatRequest(msgspec.Struct, kw_only=True, gc=False):
    model: Annotated[str, Meta(min_length=1, max_length=256)]
    messages: Annotated[list[Message], Meta(min_length=1)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    logit_bias: dict[str, Annotated[float, Meta(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    seed: Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] | None = None  # OpenAI's int64
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None


class Usage(msgspec.Struct, kw_only=True, gc=False):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # An upstream's negative count would lower counters, refund rate limits and
        # budgets: read as none.
        if self.prompt_tokens < 0 or self.completion_tokens < 0 or self.total_tokens < 0:
            self.prompt_tokens = max(self.prompt_tokens, 0)
            self.completion_tokens = max(self.completion_tokens, 0)
            self.total_tokens = max(self.total_tokens, 0)


class UsageView(msgspec.Struct, gc=False):
    """Just the usage of an OpenAI response or chunk; the rest is skipped unparsed."""

    usage: Usage | None = None


class FunctionView(msgspec.Struct, frozen=True, gc=False):
    name: str = ""
    arguments: str = ""


class ToolCallView(msgspec.Struct, frozen=True, gc=False):
    id: str | None = None
    function: FunctionView = FunctionView()


class MessageView(msgspec.Struct, frozen=True, gc=False):
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None  # what OpenAI-compatible reasoning servers add
    tool_calls: list[ToolCallView] | None = None


class ChoiceView(msgspec.Struct, frozen=True, gc=False):
    message: MessageView = MessageView()
    finish_reason: str | None = None


class CompletionView(msgspec.Struct, gc=False):
    """A chat completion as the translators to other APIs read it (``/v1/messages``,
    ``/v1/responses``)."""

    choices: list[ChoiceView] = []
    usage: Usage | None = None
