"""A small closed-loop load generator for the end-to-end limit tests, and the window
checks that judge its record.

Each of ``clients`` coroutines sends a chat request to the gateways in turn, records
``(sent, received, status, tokens, limiter ms)``, and after a 429 waits a short random
time (so refused clients keep the pressure on without spinning).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

_TIMING = re.compile(r"ratelimit;dur=([0-9.]+)")


@dataclass(frozen=True)
class Sample:
    sent: float
    received: float
    status: int
    tokens: int  # usage.total_tokens of an admitted answer
    limiter_ms: float | None  # the gateway's own measure of the limiter (server-timing)
    retry_after: str | None


async def run_load(
    urls: list[str],
    duration: float,
    body: Callable[[random.Random], dict[str, Any]],
    *,
    clients: int = 50,
    headers: dict[str, str] | None = None,
    backoff: tuple[float, float] = (0.05, 0.15),
    request_timeout: float = 10.0,
) -> list[Sample]:
    samples: list[Sample] = []
    deadline = time.monotonic() + duration
    conn = aiohttp.TCPConnector(limit=clients * 2)
    async with aiohttp.ClientSession(
        connector=conn, timeout=aiohttp.ClientTimeout(total=request_timeout)
    ) as session:

        async def client(i: int) -> None:
            rng = random.Random(i)
            n = i
            while time.monotonic() < deadline:
                url = urls[n % len(urls)] + "/v1/chat/completions"
                n += 1
                sent = time.monotonic()
                try:
                    async with session.post(url, json=body(rng), headers=headers) as r:
                        data = await r.read()
                        status = r.status
                        timing = r.headers.get("server-timing", "")
                        retry = r.headers.get("retry-after")
                except (aiohttp.ClientError, TimeoutError):
                    status, data, timing, retry = 599, b"", "", None
                received = time.monotonic()
                tokens = 0
                if status == 200:
                    tokens = int(json.loads(data)["usage"]["total_tokens"])
                m = _TIMING.search(timing)
                samples.append(
                    Sample(sent, received, status, tokens, float(m.group(1)) if m else None, retry)
                )
                if status != 200:
                    await asyncio.sleep(rng.uniform(*backoff))

        await asyncio.gather(*(client(i) for i in range(clients)))
    return samples


def max_in_windows(samples: list[Sample], width: float, weight: Callable[[Sample], int]) -> int:
    """The most admitted weight among requests wholly inside any window of ``width``
    seconds (sent at or after its start, answered by its end): each of those was
    admitted inside the window, whatever the exact instant the limiter took it."""
    ok = sorted((s for s in samples if s.status == 200), key=lambda s: s.sent)
    best = 0
    for i, first in enumerate(ok):
        end = first.sent + width
        total = 0
        for s in ok[i:]:
            if s.sent > end:
                break
            if s.received <= end:
                total += weight(s)
        best = max(best, total)
    return best


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
