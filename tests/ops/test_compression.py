"""Compression over real sockets: gzip for whole JSON answers of 1 KiB and more to
clients that accept it, never for streams; upstream answers asked for gzip (streams
for identity) and decoded as they arrive."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import GatewayFactory
from tests.harness import GatewayProc
from tests.ops.conftest import OLD_KEY, OpsUpstream

pytestmark = pytest.mark.e2e

LONG = "All work and no play makes Jack a dull boy. " * 60  # about 2.6 KiB of content


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory, ops_upstream: OpsUpstream) -> Iterator[GatewayProc]:
    env = {"OPENAI_API_KEY": OLD_KEY, "OPENAI_BASE_URL": ops_upstream.url}
    yield gateway_factory(env, name="gateway-gzip")


def _raw(gw: GatewayProc, body: dict[str, object], encoding: str | None) -> httpx.Response:
    """The answer's bytes as sent (httpx would decode them): a raw stream read."""
    headers = {"accept-encoding": encoding} if encoding else {"accept-encoding": "identity"}
    with httpx.Client(base_url=gw.url, timeout=20) as c:
        path = "/v1/embeddings" if "input" in body else "/v1/chat/completions"
        with c.stream("POST", path, json=body, headers=headers) as r:
            r._content = b"".join(r.iter_raw())  # the raw body, undecoded
            return r


def _chat(content: str, model: str = "ops-echo", **kw: object) -> dict[str, object]:
    return {"model": f"openai/{model}", "messages": [{"role": "user", "content": content}], **kw}


def test_large_json_is_gzipped_for_clients_that_accept_it(gw: GatewayProc) -> None:
    r = _raw(gw, _chat(LONG), "gzip, deflate")
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in r.headers["vary"].lower()
    assert int(r.headers["content-length"]) == len(r.content) < len(LONG) / 4
    answer = json.loads(gzip.decompress(r.content))
    assert answer["choices"][0]["message"]["content"] == LONG
    # the same answer to a client that does not accept gzip (or refuses it with q=0)
    for encoding in (None, "gzip;q=0, identity", "br"):
        plain = _raw(gw, _chat(LONG), encoding)
        assert "content-encoding" not in plain.headers, encoding
        assert json.loads(plain.content)["choices"][0]["message"]["content"] == LONG


def test_small_answers_are_not_compressed(gw: GatewayProc) -> None:
    r = _raw(gw, _chat("hi"), "gzip")
    assert r.status_code == 200 and len(r.content) < 1024
    assert "content-encoding" not in r.headers
    assert json.loads(r.content)["choices"][0]["message"]["content"] == "hi"


def test_embeddings_and_the_openai_sdk(gw: GatewayProc) -> None:
    """The SDK sends Accept-Encoding: gzip and decodes what it gets."""
    r = _raw(gw, {"model": "openai/text-embedding-3-small", "input": ["a", "b"]}, "gzip")
    assert r.headers["content-encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(r.content))["data"][1]["embedding"]) == 1536
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=20)
    emb = client.embeddings.create(model="openai/text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 1536
    chat = client.chat.completions.create(
        model="openai/ops-echo", messages=[{"role": "user", "content": LONG}]
    )
    assert chat.choices[0].message.content == LONG


def test_streams_are_never_compressed(gw: GatewayProc) -> None:
    body = _chat(LONG, "ops-slow", stream=True)
    gzip_ok = {"accept-encoding": "gzip"}
    with (
        httpx.Client(base_url=gw.url, timeout=20) as c,
        c.stream("POST", "/v1/chat/completions", json=body, headers=gzip_ok) as r,
    ):
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in r.headers
        pieces = list(r.iter_raw())
    text = b"".join(pieces).decode()
    assert text.endswith("data: [DONE]\n\n")
    assert len(pieces) > 3  # events arrived one by one, not buffered into one write
    content = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in text.splitlines()
        if line.startswith("data: {")
    )
    assert content == LONG


def test_upstream_is_asked_for_gzip_and_decoded(gw: GatewayProc, ops_upstream: OpsUpstream) -> None:
    """The ops upstream gzips whatever may be gzipped: whole answers and, when asked,
    streams (flushed per event); the gateway decodes both before reading them."""
    ops_upstream.reset()
    r = _raw(gw, _chat("whole answer"), None)
    assert json.loads(r.content)["choices"][0]["message"]["content"] == "whole answer"
    s = _raw(gw, _chat("a stream", stream=True), None)
    assert s.text.endswith("data: [DONE]\n\n") and '"content": "a stream"' in s.text
    seen = {(x["path"], x["accept_encoding"]) for x in ops_upstream.requests()}
    assert ("/v1/chat/completions", "gzip") in seen  # the whole answer
    assert ("/v1/chat/completions", "identity") in seen  # the stream


def test_a_compressed_stream_is_decoded_event_by_event(gw: GatewayProc) -> None:
    """An upstream that gzips a stream though it was asked for identity: each event
    is decoded as its flushed block arrives, and relayed as it comes."""
    body = _chat(LONG, "ops-gzip", stream=True)
    with (
        httpx.Client(base_url=gw.url, timeout=20) as c,
        c.stream("POST", "/v1/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200 and "content-encoding" not in r.headers
        pieces = list(r.iter_raw())
    text = b"".join(pieces).decode()
    assert text.endswith("data: [DONE]\n\n") and len(pieces) > 3
    content = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in text.splitlines()
        if line.startswith("data: {")
    )
    assert content == LONG
