"""Helpers for the operations tests: a gateway config file, streams held open by a
client, and signals to the supervisor process only (as Kubernetes sends them)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.harness import GatewayProc


def write_config(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def slow_mock(alias: str, tokens: int, per_second: float, latency_ms: float = 0) -> str:
    return (
        f"  - alias: {alias}\n"
        "    deployments:\n"
        "      - provider: mock\n"
        "        model: mock-1\n"
        f"        mock: {{latency_ms: {latency_ms}, tokens_per_second: {per_second}, "
        f"reply_tokens: {tokens}}}\n"
    )


def signal_supervisor(gw: GatewayProc, sig: int = signal.SIGTERM) -> None:
    """The supervisor alone, as a container runtime signals PID 1."""
    os.kill(gw.proc.pid, sig)


@dataclass
class StreamResult:
    status: int = 0
    events: list[str] = field(default_factory=list)
    error: str | None = None
    started: float = 0.0
    ended: float = 0.0

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1] == "[DONE]"

    def error_event(self) -> dict[str, Any] | None:
        if not self.events or self.events[-1] == "[DONE]":
            return None
        last = json.loads(self.events[-1])
        return last.get("error") if isinstance(last, dict) else None


async def stream_chat(
    client: httpx.AsyncClient, model: str, first: asyncio.Event | None = None
) -> StreamResult:
    """One streamed chat completion, read to its end; ``first`` is set at its first event."""
    out = StreamResult(started=time.monotonic())
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            out.status = r.status_code
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    out.events.append(line[6:])
                    if first is not None:
                        first.set()
    except httpx.HTTPError as exc:
        out.error = type(exc).__name__
    out.ended = time.monotonic()
    return out


def refused(url: str) -> bool:
    """A new connection to ``url`` is refused."""
    try:
        httpx.get(url, timeout=2)
    except httpx.ConnectError:
        return True
    return False
