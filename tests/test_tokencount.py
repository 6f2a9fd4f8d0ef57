"""Chat-level token counting against OpenAI's cookbook, its published numbers, and tiktoken."""

from __future__ import annotations

from typing import Any
from unittest import mock

import msgspec
import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken_ext import openai_public

from _speedups import _tokens_data
from gateway import tokencount
from gateway.tokencount import (
    IMAGE_DEFAULT,
    IMAGE_LOW_DETAIL,
    count_chat_tokens,
    count_text_tokens,
    encoding_for_model,
)


@pytest.fixture(scope="module")
def encodings() -> dict[str, tiktoken.Encoding]:
    """Real tiktoken encodings, built offline from the shipped (hash-verified) ranks."""
    out = {}
    for name in _tokens_data.ENCODINGS:
        ranks = _tokens_data.rank_dict(name)
        with mock.patch.object(openai_public, "load_tiktoken_bpe", lambda *a, _r=ranks, **k: _r):
            out[name] = tiktoken.Encoding(**getattr(openai_public, name)())
    return out


# The cookbook's reference implementations ("How to count tokens with tiktoken", sections 6
# and 7), with tiktoken.encoding_for_model replaced by the offline encodings.


def cookbook_messages(messages: list[dict[str, str]], enc: tiktoken.Encoding) -> int:
    num_tokens = 0
    for message in messages:
        num_tokens += 3
        for key, value in message.items():
            num_tokens += len(enc.encode(value))
            if key == "name":
                num_tokens += 1
    return num_tokens + 3


def cookbook_tools(functions: list[dict[str, Any]], messages: list, enc: tiktoken.Encoding) -> int:
    func_init = 7 if enc.name == "o200k_base" else 10
    prop_init, prop_key, enum_init, enum_item, func_end = 3, 3, -3, 3, 12
    count = 0
    for f in functions:
        count += func_init
        function = f["function"]
        f_desc = function["description"].removesuffix(".")
        count += len(enc.encode(function["name"] + ":" + f_desc))
        properties = function["parameters"]["properties"]
        if properties:
            count += prop_init
            for key, prop in properties.items():
                count += prop_key
                if "enum" in prop:
                    count += enum_init
                    for item in prop["enum"]:
                        count += enum_item + len(enc.encode(item))
                p_desc = prop["description"].removesuffix(".")
                count += len(enc.encode(f"{key}:{prop['type']}:{p_desc}"))
    count += func_end
    return cookbook_messages(messages, enc) + count


COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
WEATHER_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


def decoded(obj: object) -> Any:
    """As the gateway sees a request body: msgspec-decoded JSON."""
    return msgspec.json.decode(msgspec.json.encode(obj))


# Prompt tokens the cookbook prints, both from its function and from the OpenAI API.
@pytest.mark.parametrize(
    ("model", "published"),
    [
        ("gpt-3.5-turbo", 129),
        ("gpt-4-0613", 129),
        ("gpt-4", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
    ],
)
def test_cookbook_messages_example(encodings, model: str, published: int) -> None:
    enc = encodings[encoding_for_model(model)]
    assert cookbook_messages(COOKBOOK_MESSAGES, enc) == published
    assert count_chat_tokens(decoded(COOKBOOK_MESSAGES), model) == published


@pytest.mark.parametrize(
    ("model", "published"),
    [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)],
)
def test_cookbook_tools_example(encodings, model: str, published: int) -> None:
    enc = encodings[encoding_for_model(model)]
    assert cookbook_tools(WEATHER_TOOLS, WEATHER_MESSAGES, enc) == published
    assert count_chat_tokens(decoded(WEATHER_MESSAGES), model, decoded(WEATHER_TOOLS)) == published


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("openai/gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1-preview", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:org::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo-2024-04-09", "cl100k_base"),
        ("azure/gpt-35-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("openai/text-embedding-ada-002", "cl100k_base"),
        ("ft:gpt-3.5-turbo:org::x", "cl100k_base"),
        ("anthropic/claude-sonnet-4-5", "o200k_base"),
        ("gemini/gemini-2.5-pro", "o200k_base"),
        ("mock-1", "o200k_base"),
        ("", "o200k_base"),
    ],
)
def test_encoding_for_model(model: str, encoding: str) -> None:
    assert encoding_for_model(model) == encoding


def test_encoding_for_model_agrees_with_tiktoken() -> None:
    for model in ["gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "gpt-4", "gpt-3.5-turbo"]:
        assert encoding_for_model(model) == tiktoken.model.encoding_name_for_model(model)


def test_names_cost_one_token_more(encodings) -> None:
    enc = encodings["o200k_base"]
    base = [{"role": "user", "content": "hi"}]
    named = [{"role": "user", "name": "alice_42", "content": "hi"}]
    extra = len(enc.encode("alice_42")) + 1
    assert count_chat_tokens(named, "gpt-4o") == count_chat_tokens(base, "gpt-4o") + extra
    assert count_chat_tokens(base, "gpt-4o") == 3 + 1 + 1 + 3  # message, role, "hi", priming


def test_tool_calls_and_tool_results(encodings) -> None:
    enc = encodings["o200k_base"]
    args = '{"location": "Paris, FR", "unit": "celsius"}'
    messages = decoded(
        [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_current_weather", "arguments": args},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc", "content": "22 C, sunny"},
        ]
    )

    def n(text: str) -> int:
        return len(enc.encode(text))

    expected = (
        3 + n("user") + n("Weather in Paris?")
        + 3 + n("assistant") + n("get_current_weather") + n(args)
        + 3 + n("tool") + n("call_abc") + n("22 C, sunny")
        + 3
    )  # fmt: skip
    assert count_chat_tokens(messages, "gpt-4o") == expected


def test_content_parts(encodings) -> None:
    enc = encodings["cl100k_base"]
    text_parts = [
        {"type": "text", "text": "What is in "},
        {"type": "text", "text": "this image?"},
    ]
    image_low = {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}
    image_auto = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    base = count_chat_tokens([{"role": "user", "content": ""}], "gpt-4")
    parts = count_chat_tokens([{"role": "user", "content": text_parts}], "gpt-4")
    expected = len(enc.encode("What is in ")) + len(enc.encode("this image?"))
    assert parts - base == expected
    with_images = count_chat_tokens(
        [{"role": "user", "content": [*text_parts, image_low, image_auto]}], "gpt-4"
    )
    assert with_images - parts == IMAGE_LOW_DETAIL + IMAGE_DEFAULT == 85 + 765


def test_other_parts_skip_payloads() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "UklGR" * 5000, "format": "wav"}}
    file = {"type": "file", "file": {"file_data": "JVBERi0" * 5000, "filename": "a.pdf"}}
    total = count_chat_tokens([{"role": "user", "content": [audio, file]}], "gpt-4o")
    assert 8 < total < 30  # "wav", "a.pdf" and framing; not the base64


def test_tools_legacy_functions_and_odd_schemas() -> None:
    bare = WEATHER_TOOLS[0]["function"]
    assert count_chat_tokens(WEATHER_MESSAGES, "gpt-4o", [bare]) == 101
    odd = [
        {"type": "function", "function": {"name": "noop"}},
        {"type": "function", "function": {"name": "f", "parameters": {"properties": {"a": {}}}}},
        {"type": "function", "function": {"name": "g", "parameters": {"properties": {"x": 1}}}},
        {
            "function": {
                "name": "h",
                "parameters": {
                    "properties": {"t": {"type": ["string", "null"], "enum": [1, None]}}
                },
            }
        },
    ]
    assert count_chat_tokens([], "gpt-4o", odd) > 4 * 7


def test_count_text_tokens(encodings) -> None:
    enc = encodings["cl100k_base"]
    model = "text-embedding-3-small"
    assert count_text_tokens("hello world", model) == len(enc.encode("hello world"))
    assert count_text_tokens(["a b", "c"], model) == len(enc.encode("a b")) + 1
    assert count_text_tokens([1, 2, 3], model) == 3
    assert count_text_tokens([[1, 2], [3], []], model) == 3
    assert count_text_tokens([], model) == 0
    assert count_text_tokens("", model) == 0


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["role", "content", "name", "tool_calls", "function", "type", "text", "image_url",
             "arguments", "parameters", "properties", "enum", "description", "x"]
        ) | st.text(max_size=5),
        children,
        max_size=5,
    ),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(messages=JSON, tools=JSON, model=st.text(max_size=10) | st.just("gpt-4"), text=JSON)
def test_any_json_shape_is_counted_without_raising(messages, tools, model, text) -> None:
    """Whatever the shape: every message costs at least its framing, tools add the same
    amount whatever the messages are (they are counted apart), and an embeddings input
    list costs the sum of its items."""
    messages, tools, text = decoded(messages), decoded(tools), decoded(text)
    n = len(messages) if isinstance(messages, list) else 1
    bare = count_chat_tokens(messages, model)
    assert (
        type(bare) is int and bare >= tokencount.REPLY_PRIMING + tokencount.TOKENS_PER_MESSAGE * n
    )
    with_tools = count_chat_tokens(messages, model, tools)
    tools_alone = count_chat_tokens([], model, tools) - count_chat_tokens([], model)
    assert with_tools - bare == tools_alone
    if isinstance(tools, list) and tools:
        assert tools_alone >= tokencount.FUNC_END
    total = count_text_tokens(text, model)
    assert type(total) is int and total >= 0
    if isinstance(text, list):
        assert total == sum(count_text_tokens([item], model) for item in text)


def test_uses_the_kernel() -> None:
    from _speedups import tokens

    assert tokencount.count_tokens is tokens.count_tokens


def test_deep_nesting_and_huge_numbers() -> None:
    deep: object = "x"
    for _ in range(5000):
        deep = [deep]
    messages = [{"role": "user", "content": deep, "extra": {"n": 10**400}}]
    assert count_chat_tokens(messages, "gpt-4o", tools=deep) > 3 + 3
    assert count_text_tokens(deep, "gpt-4o") == 1
