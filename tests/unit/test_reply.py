"""Writing a Reply to ASGI: a stream is always closed, even when its frames never ran."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.pipeline.reply import Reply, send_reply


def _stream() -> tuple[Reply, list[str]]:
    events: list[str] = []

    async def frames() -> AsyncIterator[bytes]:
        try:
            events.append("started")
            yield b"data: {}\n\n"
        finally:
            events.append("generator closed")

    async def close() -> None:
        events.append("relay closed")

    return Reply(200, {}, frames=frames(), close=close), events


@pytest.mark.parametrize("failure", [ConnectionResetError, asyncio.CancelledError])
def test_a_stream_is_closed_when_sending_fails_before_its_first_frame(failure: type) -> None:
    reply, events = _stream()

    async def send(message: Any) -> None:
        raise failure()

    async def main() -> None:
        with pytest.raises(failure):
            await send_reply(reply, send)

    asyncio.run(main())
    assert events == ["relay closed"]  # the frames never ran, the relay was closed anyway


def test_a_stream_sent_whole_is_closed_once_after_its_frames() -> None:
    reply, events = _stream()
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(send_reply(reply, send))
    assert events == ["started", "generator closed", "relay closed"]
    assert sent[0]["status"] == 200 and sent[-1] == {
        "type": "http.response.body",
        "body": b"",
        "more_body": False,
    }


def test_a_stream_whose_last_frame_is_known_ends_with_it() -> None:
    """``last()`` true after a frame: that frame is the body's end (no empty closing
    message), and the generator still runs to its end and is closed."""
    events: list[str] = []
    state = {"last": False}

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            state["last"] = True
            yield b"data: [DONE]\n\n"
            events.append("ran to its end")
        finally:
            events.append("generator closed")

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    reply = Reply(200, {}, frames=frames(), last=lambda: state["last"])
    asyncio.run(send_reply(reply, send))
    assert [(m.get("body"), m.get("more_body")) for m in sent[1:]] == [
        (b"data: 1\n\n", True),
        (b"data: [DONE]\n\n", False),
    ]
    assert events == ["ran to its end", "generator closed"]
