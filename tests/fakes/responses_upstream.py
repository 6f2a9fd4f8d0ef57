"""A small OpenAI Responses API upstream (OpenAI's and Azure's v1 paths) for end-to-end tests.

Run it as ``python -m tests.fakes.responses_upstream --port N [--key test-key]``.

``POST /v1/responses`` (OpenAI, ``Authorization: Bearer <key>``) and
``POST /openai/v1/responses`` (Azure v1, ``api-key: <key>``), JSON or SSE with
``sequence_number`` on every event, and ``GET /v1/models``. Like OpenAI it keeps
what it answered: a ``previous_response_id`` it made is expanded to that
conversation (its input and output), one it did not is a 400
``previous_response_not_found``. Every request is recorded. Behaviour by model:

==========================  ==================================================
tools, last item not a      one ``function_call`` (``TOOL_NAME``, ``TOOL_ARGS``)
``function_call_output``
last item a                 ``The weather: <that output>``
``function_call_output``
``resp-500``                500, OpenAI error body
``resp-fail-followup``      500 when the request has ``previous_response_id``
``resp-stream-failed``      streams two text deltas, then ``response.failed``
``resp-stream-error``       streams two text deltas, then the ``error`` event
``resp-preamble-error``     ``response.created``, ``response.in_progress``, then ``error``
``resp-cut``                streams two text deltas, then drops the connection
otherwise                   ``Echo: <last user text> (user turns: <n>)``, n counted
                            over the whole conversation it holds
==========================  ==================================================

Test-only endpoints: ``GET /_requests``, ``POST /_reset``.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from aiohttp import web

from tests.fakes.scaffold import (
    STATE,
    described,
    headers_of,
    new_app,
    open_stream,
    openai_error,
    pieces,
    serve,
    sse,
)

TOOL_NAME = "get_weather"
TOOL_ARGS = '{"city": "Paris"}'
_ids = itertools.count(1)


def _error(status: int, message: str, type_: str, param: str | None, code: str | None) -> Any:
    return web.json_response(openai_error(message, type_, param, code), status=status)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        str(p.get("text", "")) for p in content or () if isinstance(p, dict) and "text" in p
    )


def _items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value or [])


def _output(body: dict[str, Any], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last = items[-1] if items else {}
    n = next(_ids)
    if last.get("type") == "function_call_output":
        text = f"The weather: {last.get('output')}"
    elif body.get("tools"):
        return [
            {
                "id": f"fc_fake_{n}",
                "type": "function_call",
                "status": "completed",
                "call_id": f"call_fake_{n}",
                "name": TOOL_NAME,
                "arguments": TOOL_ARGS,
            }
        ]
    else:
        users = [i for i in items if i.get("role") == "user"]
        said = _text_of(users[-1].get("content")) if users else ""
        text = f"Echo: {said} (user turns: {len(users)})"
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return [
        {
            "id": f"msg_fake_{n}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
    ]


def _response(body: dict[str, Any], status: str, output: list[Any], items: list[Any]) -> dict:
    words = len(json.dumps(items)) // 20
    return {
        "id": f"resp_fake_{next(_ids)}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": body.get("model"),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "store": body.get("store") is not False,
        "usage": {
            "input_tokens": 7 + words,
            "input_tokens_details": {"cached_tokens": 2},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 1},
            "total_tokens": 12 + words,
        },
    }


def _sse(kind: str, seq: int, **fields: Any) -> bytes:
    return sse({"type": kind, "sequence_number": seq, **fields}, kind)


async def _stream(request: web.Request, body: dict[str, Any], final: dict[str, Any]) -> Any:
    model = str(body.get("model"))
    resp = await open_stream(request)
    seq = itertools.count()
    start = {**final, "status": "in_progress", "output": [], "usage": None}
    await resp.write(_sse("response.created", next(seq), response=start))
    await resp.write(_sse("response.in_progress", next(seq), response=start))
    if model == "resp-preamble-error":
        await resp.write(_sse("error", next(seq), code="server_error", message="boom", param=None))
        return resp
    for index, item in enumerate(final["output"]):
        ids = {"item_id": item["id"], "output_index": index}
        if item["type"] == "function_call":
            added = {**item, "arguments": "", "status": "in_progress"}
            await resp.write(
                _sse("response.output_item.added", next(seq), output_index=index, item=added)
            )
            args = item["arguments"]
            for piece in (args[:6], args[6:]):
                await resp.write(
                    _sse("response.function_call_arguments.delta", next(seq), **ids, delta=piece)
                )
            await resp.write(
                _sse("response.function_call_arguments.done", next(seq), **ids, arguments=args)
            )
        else:
            added = {**item, "content": [], "status": "in_progress"}
            await resp.write(
                _sse("response.output_item.added", next(seq), output_index=index, item=added)
            )
            text = item["content"][0]["text"]
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            ids["content_index"] = 0
            await resp.write(_sse("response.content_part.added", next(seq), **ids, part=empty))
            for i, piece in enumerate(pieces(text, 6)):
                delta = {"delta": piece, "logprobs": []}
                await resp.write(_sse("response.output_text.delta", next(seq), **ids, **delta))
                if i >= 1 and model in ("resp-stream-failed", "resp-stream-error", "resp-cut"):
                    if model == "resp-stream-failed":
                        failed = {
                            **start,
                            "status": "failed",
                            "error": {"code": "server_error", "message": "model crashed"},
                        }
                        await resp.write(_sse("response.failed", next(seq), response=failed))
                    elif model == "resp-stream-error":
                        await resp.write(
                            _sse(
                                "error",
                                next(seq),
                                code="server_error",
                                message="model crashed",
                                param=None,
                            )
                        )
                    else:
                        request.transport.close()  # type: ignore[union-attr]
                    return resp
            await resp.write(
                _sse("response.output_text.done", next(seq), **ids, text=text, logprobs=[])
            )
            await resp.write(
                _sse("response.content_part.done", next(seq), **ids, part=item["content"][0])
            )
        await resp.write(
            _sse("response.output_item.done", next(seq), output_index=index, item=item)
        )
    await resp.write(_sse("response.completed", next(seq), response=final))
    return resp


async def responses(request: web.Request) -> web.StreamResponse:
    body: dict[str, Any] = request["json"]
    state = request.app[STATE]
    model = str(body.get("model"))
    previous = body.get("previous_response_id")
    if model == "resp-500" or (model == "resp-fail-followup" and previous):
        return _error(500, "The server had an error", "server_error", None, None)
    history: list[Any] = []
    if previous is not None:
        held = state["responses"].get(previous)
        if held is None:
            return _error(
                400,
                f"Previous response with id '{previous}' not found.",
                "invalid_request_error",
                "previous_response_id",
                "previous_response_not_found",
            )
        history = held
    items = history + _items(body.get("input"))
    final = _response(body, "completed", _output(body, items), items)
    if body.get("store") is not False:
        state["responses"][final["id"]] = items + final["output"]
    if body.get("stream"):
        return await _stream(request, body, final)
    return web.json_response(final)


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "resp-echo", "object": "model"}]})


def _refuse(request: web.Request) -> web.StreamResponse | None:
    key = request.app[STATE]["key"]
    headers = headers_of(request)
    azure = request.path.startswith("/openai/")
    presented = headers.get("api-key") if azure else headers.get("authorization")
    if presented != (key if azure else f"Bearer {key}"):
        return _error(401, "Incorrect API key provided", "invalid_request_error", None, "bad_key")
    if request.method == "POST" and not isinstance(request["json"], dict):
        return _error(400, "body must be a JSON object", "invalid_request_error", None, None)
    return None


def make_app(key: str) -> web.Application:
    state: dict[str, Any] = {"key": key, "responses": {}}
    app = new_app(
        state,
        describe=lambda r: described(r, query=r.query_string),
        refuse=_refuse,
    )
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/openai/v1/responses", responses)
    app.router.add_get("/v1/models", models)
    return app


if __name__ == "__main__":
    serve(__doc__, make_app)
