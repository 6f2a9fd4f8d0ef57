"""Golden files of the ``/v1/responses`` translation, both ways (``golden.py`` has the layout).

Requests: the Responses request (and stored conversation) as each provider receives it.
Answers: each provider's answer as a ``response`` object. Streams: each provider's SSE
transcript as Responses events, fed whole, split in two at every byte and byte by
byte, with the same events every time (the machinery of ``tests/providers/golden.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.translate.common import counter_ids
from gateway.translate.responses_request import expand, input_items, responses_to_chat
from gateway.translate.responses_response import chat_to_response
from tests.providers import golden as g
from tests.responses import golden as rg


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@pytest.mark.parametrize("path", rg.cases("request"), ids=_ids(rg.cases("request")))
def test_request(path: Path) -> None:
    case = rg.load(path)
    provider = case["provider"]
    body = case["responses"]
    stream = bool(case.get("stream"))
    d = rg.dep(provider)

    def build() -> Any:
        items = expand(case.get("history") or [], input_items(body.get("input")))
        chat = responses_to_chat(body, items, stream, provider)
        return d.adapter.chat_request(d, chat, stream)

    if "error" in case:
        err = rg.error_of(build)
        want = case["error"]
        assert (err.status, err.param) == (want["status"], want["param"]), err.message
        for word in want["contains"]:
            assert word in err.message, err.message
        return
    assert g.request_view(build())["body"] == case["expect"]


@pytest.mark.parametrize("path", rg.cases("response"), ids=_ids(rg.cases("response")))
def test_response(path: Path) -> None:
    case = rg.load(path)
    provider = case["provider"]
    d = rg.dep(provider)
    chat, usage = d.adapter.chat_response(d, json.dumps(case["upstream"]).encode())
    out = chat_to_response(chat, rg.base(case["request"]), provider, counter_ids())
    obj = json.loads(out)
    assert obj.pop("created_at") == 0
    assert obj == case["expect"]
    if obj["usage"] is not None:
        assert usage is not None and usage.prompt_tokens == obj["usage"]["input_tokens"]


@pytest.mark.parametrize("path", rg.cases("stream"), ids=_ids(rg.cases("stream")))
def test_stream_at_every_split(path: Path) -> None:
    case = rg.load(path)
    raw = rg.transcript(case)
    whole = rg.run(case, [raw])
    if "error" in case:
        assert whole[0] == "raised", whole
        view, message, before = whole[1]
        for k, v in case["error"].items():
            if k == "contains":
                assert all(word in message for word in v), message
            else:
                assert view.get(k) == v, (k, view)
        assert before == case["expect_before"]["events"]
    else:
        assert whole == ("ok", case["expect"])
    for pieces in g.splits(raw):
        got = rg.run(case, pieces)
        if got != whole:
            pytest.fail(f"split into {[len(p) for p in pieces][:3]}...: {got} != {whole}")
