"""How a relayed stream ends over real sockets. When the upstream's whole body is in
(the h1 transport knows), the last frames go out as the body's end, in one ASGI send;
when the upstream has sent ``[DONE]`` but holds its body open, ``[DONE]`` still reaches
the client at once: nothing is held back waiting for the upstream's end."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.harness import PROVIDER_KEY, GatewayProc

pytestmark = pytest.mark.e2e

WORDS = ["one", "two", "three"]


def _events(model: str) -> bytes:
    out = []
    for i, word in enumerate(WORDS):
        chunk = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": word + " "},
                    "finish_reason": "stop" if i == len(WORDS) - 1 else None,
                }
            ],
        }
        out.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


class RawUpstream:
    """Chunked SSE answers: ``whole`` writes everything, terminator included, in one
    write; ``hold`` writes the events and ``[DONE]``, then waits for ``release`` before
    the terminating chunk."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = json.loads(await reader.readexactly(length))
                model = body["model"]
                data = _events(model)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(data), data)
                )
                if model == "hold":
                    await writer.drain()
                    await self.loop.run_in_executor(None, self.release.wait, 30)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        self.release.set()
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def raw_gw(gateway_factory: GatewayFactory) -> Iterator[tuple[GatewayProc, RawUpstream]]:
    up = RawUpstream()
    gw = gateway_factory(
        {"OPENAI_API_KEY": PROVIDER_KEY, "OPENAI_BASE_URL": f"http://127.0.0.1:{up.port}/v1"},
        name="gateway-stream-end",
    )
    try:
        yield gw, up
    finally:
        gw.stop()
        up.stop()


def _request(model: str) -> dict[str, object]:
    return {
        "model": f"openai/{model}",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }


def test_a_whole_upstream_body_ends_the_relayed_stream(
    raw_gw: tuple[GatewayProc, RawUpstream],
) -> None:
    gw, _ = raw_gw
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        for _ in range(3):  # and the upstream connection is reused in between
            r = c.post("/v1/chat/completions", json=_request("whole"))
            assert r.status_code == 200
            assert r.content.endswith(b"data: [DONE]\n\n")
            text = "".join(
                ev["choices"][0]["delta"].get("content") or ""
                for line in r.content.split(b"\n\n")
                if line.startswith(b"data: {")
                for ev in [json.loads(line[6:])]
                if ev["choices"]
            )
            assert text == "one two three "


def test_done_reaches_the_client_while_the_upstream_holds_its_body_open(
    raw_gw: tuple[GatewayProc, RawUpstream],
) -> None:
    gw, up = raw_gw
    up.release.clear()
    seen = b""
    with (
        httpx.Client(base_url=gw.url, timeout=10) as c,
        c.stream("POST", "/v1/chat/completions", json=_request("hold")) as r,
    ):
        for piece in r.iter_raw():
            seen += piece
            if b"data: [DONE]\n\n" in seen:
                up.release.set()  # only now may the upstream end its body
        assert seen.endswith(b"data: [DONE]\n\n")
    assert up.release.is_set()
