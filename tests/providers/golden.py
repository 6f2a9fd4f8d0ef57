"""Shared helpers for the provider golden-file tests (no tests in this module).

Layout under ``tests/data/providers/<provider>/``:
- ``request_<case>.json``  {"openai": <request>, "stream": bool, "deployment": {...}?,
                            "expect": {"method", "url", "headers", "body"}}
                            or {"openai": ..., "error": {"status", "param", "contains"}}
- ``response_<case>.json`` {"provider": <answer>, "expect": <OpenAI answer without created>}
- ``stream_<case>.sse``    a provider SSE transcript, with ``stream_<case>.json``:
                            {"include_usage": bool, "expect": <summary>} or
                            {"include_usage": bool, "error": {...}, "expect_before": <summary>}
- ``error_<case>.json``    {"status", "headers", "body", "expect": {"status", "type", ...}}
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from gateway.errors import GatewayError
from gateway.providers.base import Deployment, Timeouts
from gateway.providers.registry import _adapter_for
from gateway.settings import Secret

DATA = Path(__file__).resolve().parent.parent / "data" / "providers"
KEY = "sk-test-SECRET-0123456789"
SECRET_HEADERS = {"x-api-key", "api-key", "x-goog-api-key", "authorization"}


def _refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError("this test sends nothing upstream")


OFFLINE = httpx.MockTransport(_refuse)


def make_dep(
    provider: str,
    model: str,
    base_url: str,
    api_version: str | None = None,
    key: str | None = KEY,
) -> Deployment:
    dep = Deployment(
        provider=provider,
        model=model,
        label=f"{provider}/{model}",
        base_url=base_url.rstrip("/"),
        api_key=Secret(key) if key else None,
        timeouts=Timeouts(connect=5, read=60, first_token=60, idle=60, total=600),
        transport=OFFLINE,  # adapters translate offline: nothing is sent
        adapter=_adapter_for(provider),
        api_version=api_version,
    )
    dep.adapter.prepare(dep)
    return dep


def cases(provider: str, prefix: str, ext: str = "json") -> list[Path]:
    return sorted((DATA / provider).glob(f"{prefix}_*.{ext}"))


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def request_view(req: httpx.Request) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in req.headers.items() if k.lower() not in SECRET_HEADERS}
    headers.pop("content-length", None)  # the transport's, like accept-encoding: gzip
    headers.pop("accept-encoding", None)
    return {
        "method": req.method,
        "url": str(req.url),
        "headers": headers,
        "body": json.loads(req.content) if req.content else None,
    }


def secret_headers(req: httpx.Request) -> dict[str, str]:
    return {k.lower(): v for k, v in req.headers.items() if k.lower() in SECRET_HEADERS}


# -- streams ------------------------------------------------------------------------------


class Raised(Exception):
    def __init__(self, err: GatewayError, frames: list[bytes]) -> None:
        super().__init__(err.message)
        self.err = err
        self.frames = frames


def run_stream(translator: Any, pieces: list[bytes]) -> list[bytes]:
    """Feed ``pieces`` then finish; frames out, or Raised carrying the frames before."""
    frames: list[bytes] = []
    try:
        for piece in pieces:
            frames.extend(translator.feed(piece))
        frames.extend(translator.finish())
    except GatewayError as err:
        raise Raised(err, frames) from None
    return frames


def splits(raw: bytes) -> list[list[bytes]]:
    """Every way to feed ``raw``: whole, in two pieces at every byte, one byte at a time."""
    out = [[raw]]
    out.extend([raw[:i], raw[i:]] for i in range(1, len(raw)))
    out.append([raw[i : i + 1] for i in range(len(raw))])
    return out


_LINE = re.compile(rb"\r\n|\r|\n")
_FIELDS = (b"data: ", b"event: ")


def sse_events(out: bytes) -> list[tuple[str, Any]]:
    """What the gateway wrote, read strictly as SSE: (event type, data as JSON or "[DONE]").

    Every line is a ``data:`` or ``event:`` field or the blank line ending an event,
    every event ends, and every event's data is whole JSON, however its lines were cut.
    """
    from tests.speedups.test_sse import reference

    assert not out or out.endswith(b"\n\n"), out[-80:]
    for line in _LINE.split(out):
        assert not line or line.startswith(_FIELDS), f"a line of no field: {line[:80]!r}"
    events, _last_id, _retry, buffered = reference(out)
    assert buffered == 0
    return [(etype, data if data == "[DONE]" else json.loads(data)) for etype, data, _ in events]


def normalize(frames: list[bytes], rename_ids: bool = False) -> list[Any]:
    """Frames as parsed objects, ``created`` dropped; generated ids renamed by appearance."""
    seen: dict[str, str] = {}

    def rename(value: str) -> str:
        if not rename_ids:
            return value
        return seen.setdefault(value, f"<id{len(seen)}>")

    out: list[Any] = []
    for f in b"".join(frames).split(b"\n\n"):
        if not f:
            continue
        text = f.decode()
        if text == "data: [DONE]":
            out.append("[DONE]")
            continue
        assert text.startswith("data: "), text
        obj = json.loads(text[6:])
        obj.pop("created", None)
        if "id" in obj:
            obj["id"] = rename(obj["id"])
        for c in obj.get("choices") or ():
            for call in (c.get("delta") or {}).get("tool_calls") or ():
                if "id" in call:
                    call["id"] = rename(call["id"])
        out.append(obj)
    return out


def summarize(frames: list[bytes], rename_ids: bool = False) -> dict[str, Any]:
    """The meaning of an OpenAI chunk stream, checking its invariants on the way."""
    objs = normalize(frames, rename_ids)
    text: dict[int, str] = {}
    calls: dict[int, dict[int, dict[str, Any]]] = {}
    finish: dict[int, str] = {}
    usage = None
    usage_chunks = 0
    done = False
    chunk_ids = set()
    roles: set[int] = set()
    for obj in objs:
        assert not done, "frames after [DONE]"
        if obj == "[DONE]":
            done = True
            continue
        assert obj["object"] == "chat.completion.chunk"
        chunk_ids.add(obj["id"])
        if obj.get("usage") is not None:
            assert obj["choices"] == [], "usage rides on a chunk with no choices"
            usage = obj["usage"]
            usage_chunks += 1
            continue
        for c in obj["choices"]:
            i = c["index"]
            d = c.get("delta") or {}
            if d.get("role"):
                roles.add(i)
            if d.get("content"):
                assert i not in finish, "content after finish_reason"
                text[i] = text.get(i, "") + d["content"]
            for call in d.get("tool_calls") or ():
                slot = calls.setdefault(i, {})
                k = call["index"]
                if "id" in call:
                    assert k not in slot, "tool call started twice"
                    assert call["type"] == "function"
                    slot[k] = {
                        "id": call["id"],
                        "name": call["function"]["name"],
                        "fragments": [],
                    }
                    first = call["function"].get("arguments") or ""
                    if first:
                        slot[k]["fragments"].append(first)
                else:
                    slot[k]["fragments"].append(call["function"]["arguments"])
            if c.get("finish_reason"):
                finish[i] = c["finish_reason"]
    assert len(chunk_ids) <= 1, "one id across the stream"
    assert usage_chunks <= 1
    for slot in calls.values():
        assert sorted(slot) == list(range(len(slot))), "tool indexes are 0, 1, ..."
    summary: dict[str, Any] = {
        "text": {str(k): v for k, v in sorted(text.items())},
        "tool_calls": {
            str(i): [
                {
                    "id": slot[k]["id"],
                    "name": slot[k]["name"],
                    "fragments": slot[k]["fragments"],
                    "arguments": _parsed("".join(slot[k]["fragments"])),
                }
                for k in sorted(slot)
            ]
            for i, slot in sorted(calls.items())
        },
        "finish_reason": {str(k): v for k, v in sorted(finish.items())},
        "usage": usage,
        "done": done,
    }
    if objs and objs[0] != "[DONE]":
        assert roles, "the first delta carries the role"
    return summary


def _parsed(arguments: str) -> Any:
    try:
        return json.loads(arguments or "{}")
    except ValueError:
        return "<incomplete JSON>"


def error_view(err: GatewayError) -> dict[str, Any]:
    out: dict[str, Any] = {"status": err.status, "type": err.type}
    if err.code is not None:
        out["code"] = err.code
    if err.param is not None:
        out["param"] = err.param
    if err.headers:
        out["headers"] = err.headers
    return out


# -- generic checks, used by each provider's test module ---------------------------------


def check_request_case(provider: str, path: Path, model: str, base_url: str) -> None:
    import pytest

    case = load(path)
    d = case.get("deployment") or {}
    stream = bool(case.get("stream"))
    if "error" in case:
        want = case["error"]
        with pytest.raises(GatewayError) as info:
            dep = make_dep(
                provider, d.get("model", model), d.get("base_url", base_url), d.get("api_version")
            )
            dep.adapter.chat_request(dep, case["openai"], stream)
        err = info.value
        assert err.status == want["status"], err.message
        assert err.param == want["param"], err.message
        for word in want.get("contains", ()):
            assert word in err.message, err.message
        return
    dep = make_dep(
        provider, d.get("model", model), d.get("base_url", base_url), d.get("api_version")
    )
    req = dep.adapter.chat_request(dep, case["openai"], stream)
    assert request_view(req) == case["expect"]
    assert KEY not in str(req.url)
    assert KEY in secret_headers(req).values() or any(
        v.endswith(KEY) for v in secret_headers(req).values()
    )


def check_response_case(provider: str, path: Path, model: str, base_url: str) -> None:
    case = load(path)
    d = case.get("deployment") or {}
    dep = make_dep(
        provider, d.get("model", model), d.get("base_url", base_url), d.get("api_version")
    )
    out, usage = dep.adapter.chat_response(dep, json.dumps(case["provider"]).encode())
    obj = json.loads(out)
    obj.pop("created", None)
    if case.get("normalize_ids"):
        obj["id"] = "<id>"
        n = 0
        for c in obj["choices"]:
            for call in c["message"].get("tool_calls") or ():
                call["id"] = f"<id{n}>"
                n += 1
    assert obj == case["expect"]
    want = case["expect"].get("usage")
    if want is not None:
        assert usage is not None
        assert usage.prompt_tokens == want["prompt_tokens"]
        assert usage.completion_tokens == want["completion_tokens"]
        assert usage.total_tokens == want["total_tokens"]


def check_stream_case(provider: str, path: Path, model: str, base_url: str) -> None:
    """The transcript whole, split at every byte, and byte by byte: identical results."""
    import pytest

    case = load(path.with_suffix(".json"))
    raw = path.read_bytes()
    d = case.get("deployment") or {}
    dep = make_dep(
        provider, d.get("model", model), d.get("base_url", base_url), d.get("api_version")
    )
    include_usage = bool(case.get("include_usage"))
    rename = bool(case.get("normalize_ids"))

    def once(pieces: list[bytes]) -> Any:
        translator = dep.adapter.chat_stream(dep, include_usage)
        try:
            frames = run_stream(translator, pieces)
        except Raised as r:
            return ("raised", error_view(r.err), normalize(r.frames, rename), r.err.message)
        assert translator.done
        return ("ok", normalize(frames, rename), translator.usage)

    whole = once([raw])
    if "error" in case:
        assert whole[0] == "raised", "the stream should fail"
        want = case["error"]
        got = whole[1]
        for k, v in want.items():
            if k == "contains":
                for word in v:
                    assert word in whole[3], whole[3]
            else:
                assert got.get(k) == v, (k, got)
        if "expect_before" in case:
            assert summarize_objs(whole[2]) == case["expect_before"]
    else:
        assert whole[0] == "ok", whole
        frames_objs = whole[1]
        assert summarize_objs(frames_objs) == case["expect"]
        if case["expect"].get("usage"):
            u = whole[2]
            assert u is not None and u.prompt_tokens == case["expect"]["usage"]["prompt_tokens"]
        if not include_usage:
            assert all(o == "[DONE]" or o.get("usage") is None for o in frames_objs)
    for pieces in splits(raw):
        got = once(pieces)
        if got != whole:
            pytest.fail(f"split into {[len(p) for p in pieces][:3]}...: {got} != {whole}")


def summarize_objs(objs: list[Any]) -> dict[str, Any]:
    frames = [
        b"data: [DONE]\n\n" if o == "[DONE]" else b"data: " + json.dumps(o).encode() + b"\n\n"
        for o in objs
    ]
    return summarize(frames)


def check_error_case(provider: str, path: Path, model: str, base_url: str) -> None:
    case = load(path)
    dep = make_dep(provider, model, base_url)
    body = case["body"]
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    err = dep.adapter.map_error(
        dep, case["status"], httpx.Headers(case.get("headers") or {}), content
    )
    want = dict(case["expect"])
    contains = want.pop("contains", ())
    got = error_view(err)
    for k, v in want.items():
        assert got.get(k) == v, (k, got)
    for word in contains:
        assert word in err.message, err.message
    assert KEY not in err.message
