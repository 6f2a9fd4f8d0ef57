"""Azure OpenAI adapter: dated and v1 URLs, api-key, Azure-only stream chunks, errors."""

from __future__ import annotations

import json

import pytest

from tests.providers import golden as g

P = "azure"
MODEL = "gpt4o-prod"
BASE = "https://myres.openai.azure.com"


def test_api_key_header():
    dep = g.make_dep(P, MODEL, BASE)
    req = dep.adapter.chat_request(dep, {"messages": []}, False)
    assert g.secret_headers(req) == {"api-key": g.KEY}
    assert g.KEY not in str(req.url)


def test_filter_chunks_never_reach_the_client():
    dep = g.make_dep(P, MODEL, BASE)
    raw = (g.DATA / P / "stream_filter.sse").read_bytes()
    frames = g.run_stream(dep.adapter.chat_stream(dep, True), [raw])
    objs = [json.loads(f[6:]) for f in frames if f.startswith(b"data: {")]
    assert all("prompt_filter_results" not in o for o in objs)
    assert all("delta" in c for o in objs for c in o["choices"])
    assert [o["choices"][0].get("finish_reason") for o in objs if o["choices"]][-1] == "stop"
    assert frames[-1] == b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("base", "version", "url"),
    [
        (BASE, None, f"{BASE}/openai/deployments/emb/embeddings?api-version=2024-10-21"),
        (
            BASE + "/openai",
            "2024-06-01",
            f"{BASE}/openai/deployments/emb/embeddings?api-version=2024-06-01",
        ),
        (BASE, "v1", f"{BASE}/openai/v1/embeddings"),
        (BASE + "/openai/v1", None, f"{BASE}/openai/v1/embeddings"),
    ],
)
def test_embeddings_urls(base, version, url):
    dep = g.make_dep(P, "emb", base, version)
    body = {"model": "alias", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 256}
    req = dep.adapter.embeddings_request(dep, body)
    assert str(req.url) == url
    assert json.loads(req.content) == {**body, "model": "emb"}
    answer = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": "AAAA"}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    out, usage = dep.adapter.embeddings_response(dep, body, json.dumps(answer).encode())
    assert json.loads(out) == answer and usage.prompt_tokens == 2


def test_deployments_are_not_listed_from_the_upstream():
    dep = g.make_dep(P, MODEL, BASE)
    assert dep.adapter.lister is None


def test_non_json_answer_is_502():
    from gateway.errors import GatewayError

    dep = g.make_dep(P, MODEL, BASE)
    with pytest.raises(GatewayError) as info:
        dep.adapter.chat_response(dep, b"<html>")
    assert info.value.status == 502 and "azure" in info.value.message
