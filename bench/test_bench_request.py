"""One whole request through the edge and the pipeline, in process: what tracing costs.

The app is ``create_app()`` over the ``mock`` provider (an in-process transport, so the
upstream costs microseconds and the gateway's own work is what is measured), driven as
Granian drives it: the edge's ASGI callable with a scope, ``receive`` and ``send``.

* ``tracing-off``: no ``OTEL_EXPORTER_OTLP_ENDPOINT``. The stages are the untraced
  objects and the edge and attempt loop check one attribute each;
* ``tracing-on``: every span recorded and handed to a batch processor whose exporter
  drops them (the collector's cost is not the gateway's);
* ``tracing-unsampled``: tracing on with ``OTEL_TRACES_SAMPLER=always_off``.

Run it on two trees to compare a change: ``bench/README.md`` has the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from gateway.app import create_app
from gateway.settings import Settings

BODY = msgspec.json.encode(
    {"model": "mock-1", "messages": [{"role": "user", "content": "Say something short."}]}
)
VARIANTS = {
    "tracing-off": {},
    "tracing-on": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
    "tracing-unsampled": {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_TRACES_SAMPLER": "always_off",
    },
}


class _Drop:
    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@contextlib.contextmanager
def _app(env: dict[str, str], loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    """The app with its lifespan started, and shut down after (the lifespan's shutdown
    also undoes its ``gc.freeze()``, which would otherwise outlive the benchmark)."""
    edge = create_app(Settings.from_env({"LOG_LEVEL": "warning", **env}))
    if (
        getattr(edge, "tracer", None) is not None
    ):  # export nowhere: the collector's cost is not ours
        from gateway.telemetry.tracing import Tracer

        settings = edge.gateway.settings
        assert settings.tracing is not None
        edge.tracer = edge.gateway.tracer = Tracer(settings.tracing, exporter=_Drop())  # type: ignore[arg-type]
    messages: asyncio.Queue[Any] = asyncio.Queue()
    messages.put_nowait({"type": "lifespan.startup"})

    async def send(message: Any) -> None:
        pass

    task = loop.create_task(
        edge({"type": "lifespan", "asgi": {"version": "3.0"}}, messages.get, send)
    )
    loop.run_until_complete(asyncio.sleep(0.2))
    try:
        yield edge
    finally:
        messages.put_nowait({"type": "lifespan.shutdown"})
        loop.run_until_complete(asyncio.wait_for(task, 10))


@pytest.mark.benchmark(group="request")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_request(benchmark: Any, loop: asyncio.AbstractEventLoop, variant: str) -> None:
    with _app(VARIANTS[variant], loop) as edge:
        _drive(benchmark, loop, edge)


def _drive(benchmark: Any, loop: asyncio.AbstractEventLoop, edge: Any) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }
    statuses: list[int] = []

    async def one() -> None:
        sent = False

        async def receive() -> Any:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await edge(dict(scope), receive, send)

    benchmark(lambda: loop.run_until_complete(one()))
    assert set(statuses) == {200}
