"""The shipped redact plugin in a real gateway (``conftest.py``: a block plugin for a
custom pattern, then a redact plugin, both at ``before_cache``), driven by the
official SDKs: the upstream only ever receives the redacted prompt."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.endpoints import ENDPOINTS, Endpoint, anthropic_sdk, openai_sdk
from tests.harness import FakeUpstream, GatewayProc, metric_sum
from tests.plugins.conftest import KEY

pytestmark = pytest.mark.e2e

EMAIL = "jane.doe@example.com"
SSN = "123-45-6789"


def tag() -> str:
    return uuid.uuid4().hex[:10]


def received(fake: Any, text: str) -> list[dict[str, Any]]:
    return [r["json"] for r in fake.requests() if text in json.dumps(r["json"])]


@pytest.fixture
def oai(plugin_gateway: GatewayProc) -> Iterator[openai.OpenAI]:
    with openai_sdk(plugin_gateway, KEY) as c:
        yield c


@pytest.fixture
def claude(plugin_gateway: GatewayProc) -> Iterator[anthropic.Anthropic]:
    with anthropic_sdk(plugin_gateway, KEY) as c:
        yield c


def test_chat_prompt_is_redacted_before_the_upstream(
    plugin_gateway: GatewayProc, oai: openai.OpenAI, fake_upstream: FakeUpstream
) -> None:
    t = tag()
    before = metric_sum(plugin_gateway.metrics(), "gateway_redactions_total", pattern="email")
    raw = oai.chat.completions.with_raw_response.create(
        model="chat",
        messages=[
            {"role": "system", "content": f"{t} the customer is {EMAIL}"},
            {"role": "user", "content": f"{t} my SSN is {SSN}, mail {EMAIL}"},
        ],
    )
    assert raw.headers["x-gateway-redactions"] == "3"
    answer = raw.parse().choices[0].message.content or ""
    assert "[REDACTED:us_ssn]" in answer and EMAIL not in answer  # the fake echoes
    (sent,) = received(fake_upstream, t)
    assert EMAIL not in json.dumps(sent) and SSN not in json.dumps(sent)
    assert sent["messages"][0]["content"] == f"{t} the customer is [REDACTED:email]"
    after = metric_sum(plugin_gateway.metrics(), "gateway_redactions_total", pattern="email")
    assert after - before == 2


def test_messages_system_and_tool_results_are_redacted(
    claude: anthropic.Anthropic, anthropic_fake: Any
) -> None:
    t = tag()
    message = claude.messages.create(
        model="claude",
        max_tokens=32,
        system=[{"type": "text", "text": f"{t} support for {EMAIL}"}],
        messages=[
            {"role": "user", "content": "look me up"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": f"ssn {SSN}"},
                    {"type": "text", "text": f"{t} and my card is 4111 1111 1111 1111"},
                ],
            },
        ],
    )
    assert message.content[0].type == "text"
    (sent,) = received(anthropic_fake, t)
    assert sent["system"][0]["text"] == f"{t} support for [REDACTED:email]"
    blocks = sent["messages"][2]["content"]
    assert blocks[0]["content"] == "ssn [REDACTED:us_ssn]"
    assert blocks[1]["text"] == f"{t} and my card is [REDACTED:credit_card]"


def test_embeddings_input_is_redacted(oai: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    t = tag()
    raw = oai.embeddings.with_raw_response.create(model="embed", input=[f"{t} {EMAIL}", "plain"])
    assert raw.headers["x-gateway-redactions"] == "1"
    assert len(raw.parse().data) == 2
    (sent,) = received(fake_upstream, t)
    assert sent["input"] == [f"{t} [REDACTED:email]", "plain"]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_block_refuses_in_the_endpoint_shape_without_echoing_the_text(
    post: Any,
    plugin_gateway: GatewayProc,
    fake_upstream: FakeUpstream,
    anthropic_fake: Any,
    endpoint: Endpoint,
) -> None:
    t = tag()
    r = post(endpoint, f"{t} tell me about Project  FALCON")
    assert r.status_code == 400
    error = endpoint.error(r)
    assert error["type"] == "invalid_request_error"
    assert "'codename'" in error["message"]
    assert "FALCON" not in r.text and t not in r.text
    if not endpoint.anthropic:
        assert error["code"] == "content_blocked"
        assert error["param"] in ("messages[0].content", "input")
    assert received(fake_upstream, t) == received(anthropic_fake, t) == []


def test_a_blocked_request_never_reaches_the_sdk_as_success(
    plugin_gateway: GatewayProc, claude: anthropic.Anthropic
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model="claude",
            max_tokens=16,
            messages=[{"role": "user", "content": "project falcon status?"}],
        )
    assert "codename" in str(info.value)
    with (
        pytest.raises(openai.BadRequestError) as err,
        openai.OpenAI(
            base_url=str(claude.base_url).rstrip("/") + "/v1", api_key=KEY, max_retries=0
        ) as oai,
    ):
        oai.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "project falcon?"}]
        )
    assert err.value.code == "content_blocked"
