"""Helpers: the fault upstream's process, and the routing pipeline in-process.

``drive(fault, models, scenario)`` builds what the controllers use (a ``Registry``
from a config whose deployments point at the fault upstream, and a ``Router`` with a
seeded RNG), runs ``scenario(gw)`` in a fresh event loop over real sockets, and
closes the upstream pools.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from gateway.config import parse_config
from gateway.errors import GatewayError
from gateway.pipeline import attempts
from gateway.pipeline.routing import Router
from gateway.providers.registry import Registry
from gateway.settings import Settings
from tests.harness import Proc, _http_ok, clean_env, free_port, spawn, wait_until


@dataclass
class Fault:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.root + "/_stats", timeout=5).json()  # type: ignore[no-any-return]

    def count(self, model: str) -> int:
        return int(self.stats().get(model, {}).get("count", 0))

    def times(self, model: str) -> list[float]:
        return list(self.stats().get(model, {}).get("times", []))

    def gone(self, model: str) -> int:
        return int(self.stats().get(model, {}).get("gone", 0))

    def reset(self) -> None:
        httpx.post(self.root + "/_reset", timeout=5).raise_for_status()

    def behave(self, model: str, as_: str | None) -> None:
        r = httpx.post(self.root + "/_behave", json={"model": model, "as": as_}, timeout=5)
        r.raise_for_status()


def start_fault_upstream(log_dir: Path) -> Fault:
    port = free_port()
    argv = [sys.executable, "-m", "tests.fakes.fault_upstream", "--port", str(port)]
    proc = spawn(f"fault-upstream-{port}", argv, clean_env(), log_dir)
    fault = Fault(proc, port)
    if not wait_until(lambda: proc.alive() and _http_ok(fault.root + "/_stats")):
        proc.stop()
        raise RuntimeError("fault upstream did not start:\n" + proc.describe())
    return fault


def dep(fault: Fault, model: str, **kw: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": model, "base_url": fault.url, **kw}


def alias(name: str, *deps: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"alias": name, "deployments": list(deps), **kw}


def make_gw(models: list[dict[str, Any]], routing: dict[str, Any] | None = None, seed: int = 7):
    cfg = parse_config({"models": models, "routing": routing or {}}, environ={})
    settings = Settings(config=cfg)
    registry = Registry(settings)
    router = Router(cfg.routing, rng=random.Random(seed))
    return SimpleNamespace(registry=registry, router=router, settings=settings)


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
class Outcome:
    """What a client would have seen, plus what the loop reports."""

    status: int = 200
    error: GatewayError | None = None
    served: Any = None
    text: str = ""
    frames: list[bytes] | None = None
    elapsed: float = 0.0

    @property
    def attempts(self) -> int:
        if self.served is not None:
            return int(self.served.attempts)
        assert self.error is not None
        return int(self.error.headers["x-gateway-attempts"])

    @property
    def raw(self) -> bytes:
        return b"".join(self.frames or [])


async def call(gw: Any, model: str, *, stream: bool = False, **extra: Any) -> Outcome:
    """One chat completion through the attempt loop, the way ``api/chat.py`` calls it."""
    group = gw.registry.resolve(model)
    body = body_for(model, stream, **extra)
    t0 = time.perf_counter()
    out = Outcome()
    try:
        if not stream:
            out.served = await attempts.complete(
                gw,
                group,
                body,
                lambda d: d.adapter.chat_request(d, body, False),
                lambda d, content: d.adapter.chat_response(d, content),
            )
            import json

            msg = json.loads(out.served.result[0])["choices"][0]["message"]
            out.text = msg["content"]
        else:
            out.served = await attempts.stream(
                gw,
                group,
                body,
                lambda d: d.adapter.chat_request(d, body, True),
                lambda d: d.adapter.chat_stream(d, False),
            )
            out.frames = [f async for f in out.served.result.frames()]
            out.text = stream_text(out.raw)
    except GatewayError as err:
        out.error, out.status = err, err.status
    out.elapsed = time.perf_counter() - t0
    return out


def stream_text(raw: bytes) -> str:
    import json

    text = ""
    for line in raw.split(b"\n"):
        if line.startswith(b"data: {"):
            obj = json.loads(line[6:])
            for c in obj.get("choices") or ():
                text += (c.get("delta") or {}).get("content") or ""
    return text


def events(raw: bytes) -> list[bytes]:
    return [e for e in raw.split(b"\n\n") if e.strip()]
