"""Helpers: the fault upstream's process, and the gateway's one pipeline in-process.

``drive(models, scenario)`` builds what ``create_app`` builds (the ``Gateway`` from a
config whose deployments point at the fault upstream, with a ``Router`` on a seeded
RNG, and its ``Pipeline``), runs ``scenario(gw)`` in a fresh event loop over real
sockets to the upstream, and closes the upstream pools. ``call(gw, model)`` sends one
request through the very pipeline the HTTP endpoints run (no copy of its stages),
and returns what the client got plus what the stages recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.api.chat import CHAT
from gateway.app import build_gateway, build_pipeline
from gateway.config import parse_config
from gateway.pipeline.context import RequestContext
from gateway.pipeline.endpoint import Endpoint
from gateway.pipeline.routing import Router
from gateway.pipeline.run import Pipeline
from gateway.settings import Settings
from gateway.state import Gateway
from tests.harness import Fake, start_fake


@dataclass
class Fault(Fake):
    """The fault-injecting upstream (``tests/fakes/fault_upstream.py``): behaviour by
    model name, and what it counted per model."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.root + "/_stats", timeout=5).json()  # type: ignore[no-any-return]

    def count(self, model: str) -> int:
        return int(self.stats().get(model, {}).get("count", 0))

    def times(self, model: str) -> list[float]:
        return list(self.stats().get(model, {}).get("times", []))

    def gone(self, model: str) -> int:
        return int(self.stats().get(model, {}).get("gone", 0))

    def behave(self, model: str, as_: str | None) -> None:
        r = httpx.post(self.root + "/_behave", json={"model": model, "as": as_}, timeout=5)
        r.raise_for_status()


def start_fault_upstream(log_dir: Path) -> Fault:
    fault = start_fake("fault_upstream", log_dir, ready_path="/_stats", kind=Fault)
    assert isinstance(fault, Fault)
    return fault


def dep(fault: Fault, model: str, **kw: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": model, "base_url": fault.url, **kw}


def alias(name: str, *deps: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"alias": name, "deployments": list(deps), **kw}


class Driven:
    """The in-process gateway a scenario drives: its handles and its pipeline."""

    def __init__(self, gateway: Gateway, pipeline: Pipeline) -> None:
        self.gateway = gateway
        self.pipeline = pipeline
        self.registry = gateway.registry
        self.router = gateway.router
        self.settings = gateway.settings


def make_gw(
    models: list[dict[str, Any]], routing: dict[str, Any] | None = None, seed: int = 7
) -> Driven:
    cfg = parse_config({"models": models, "routing": routing or {}}, environ={})
    settings = Settings(config=cfg)
    gw = build_gateway(settings, Router(cfg.routing, rng=random.Random(seed)))
    return Driven(gw, build_pipeline(gw))


def drive(
    models: list[dict[str, Any]],
    scenario: Callable[[Any], Awaitable[Any]],
    routing: dict[str, Any] | None = None,
    seed: int = 7,
) -> Any:
    async def main() -> Any:
        gw = make_gw(models, routing, seed)
        try:
            return await scenario(gw)
        finally:
            await gw.registry.aclose()

    return asyncio.run(main())


def body_for(model: str, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra} | (
        {"stream": True} if stream else {}
    )


@dataclass
class ErrorView:
    """An error answer as the client got it."""

    status: int
    code: str | None
    type: str
    message: str
    headers: dict[str, str]


@dataclass
class Outcome:
    """What a client would have seen, plus what the loop reports."""

    status: int = 200
    error: ErrorView | None = None
    served: Any = None
    text: str = ""
    frames: list[bytes] | None = None
    elapsed: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def attempts(self) -> int:
        return int(self.headers["x-gateway-attempts"])

    @property
    def raw(self) -> bytes:
        return b"".join(self.frames or [])


def context(
    endpoint: Endpoint, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> RequestContext:
    """A request as the edge hands it to the pipeline: its scope and its body to read."""
    raw = json.dumps(body).encode()
    ctx = RequestContext(os.urandom(6).hex(), time.perf_counter(), "POST", endpoint.path)
    ctx.scope = {  # type: ignore[typeddict-item]
        "type": "http",
        "method": "POST",
        "path": endpoint.path,
        "headers": [(b"content-type", b"application/json"), *(headers or [])],
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # the body is in: the next message only comes when the client leaves
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    ctx.receive = receive  # type: ignore[assignment]
    return ctx


async def send(
    gw: Any,
    body: dict[str, Any],
    endpoint: Endpoint = CHAT,
    on_close: Callable[[Any], Any] | None = None,
) -> tuple[Outcome, RequestContext]:
    """One request through the pipeline; the whole answer read, as a client would."""
    ctx = context(endpoint, body)
    t0 = time.perf_counter()
    reply = await gw.pipeline.run(endpoint, ctx)
    out = Outcome(status=reply.status, headers=dict(reply.headers), served=ctx.served)
    if reply.frames is not None:
        if on_close is not None:
            ctx.served.result.add_close_hook(on_close)
        out.frames = [f async for f in reply.frames]
        out.text = stream_text(out.raw)
    elif reply.status >= 400:
        err = json.loads(reply.body)["error"]
        out.error = ErrorView(
            reply.status, err.get("code"), err["type"], err["message"], dict(reply.headers)
        )
    elif endpoint is CHAT:
        out.text = json.loads(reply.body)["choices"][0]["message"]["content"]
    out.elapsed = time.perf_counter() - t0
    return out, ctx


async def call(gw: Any, model: str, *, stream: bool = False, **extra: Any) -> Outcome:
    """One chat completion through the pipeline, as ``/v1/chat/completions`` runs it."""
    out, _ = await send(gw, body_for(model, stream, **extra))
    return out


def stream_text(raw: bytes) -> str:
    text = ""
    for line in raw.split(b"\n"):
        if line.startswith(b"data: {"):
            obj = json.loads(line[6:])
            for c in obj.get("choices") or ():
                text += (c.get("delta") or {}).get("content") or ""
    return text


def events(raw: bytes) -> list[bytes]:
    return [e for e in raw.split(b"\n\n") if e.strip()]
