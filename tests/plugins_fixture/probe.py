"""Test plugins, one of each kind the contract allows (``gateway/plugins/base.py``).

* ``Probe`` (a class taking the options mapping): reports what the context holds
  at its position in a response header ``x-probe-<tag>``.
* ``Act`` (a class declaring ``Options``; its stage is a coroutine): does what the
  request's ``x-probe-act`` header (option ``header``) says: ``reject``, ``raise``,
  ``hang``, ``header`` or ``rewrite`` (the prompt becomes ``x-probe-arg``'s value).
* ``stamp`` (a factory function making a plain function): adds ``x-probe-stamp``.
* ``Explodes``: a constructor that fails; ``broken`` cannot even be imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.plugins.base import Reject

if TYPE_CHECKING:
    from gateway.pipeline.context import RequestContext


def request_header(ctx: RequestContext, name: bytes) -> str | None:
    assert ctx.scope is not None
    for k, v in ctx.scope["headers"]:
        if k == name:
            return bytes(v).decode("latin-1")
    return None


class Probe:
    def __init__(self, options: dict[str, Any]) -> None:
        self.tag = str(options["tag"])

    def __call__(self, ctx: RequestContext) -> None:
        principal = ctx.principal.name if ctx.principal is not None else "-"
        endpoint = ctx.endpoint.name if ctx.endpoint is not None else "-"
        ctx.headers[f"x-probe-{self.tag}"] = (
            f"endpoint={endpoint};model={ctx.model or '-'};body={len(ctx.body)};"
            f"principal={principal};plan={len(ctx.plan)};"
            f"lease={'yes' if ctx.lease is not None else 'no'};"
            f"served={'yes' if ctx.served is not None else 'no'}"
        )


class ActOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: int = 403
    code: str = "probe_denied"
    header: str = "x-probe-act"  # the request header it obeys


class Act:
    Options = ActOptions

    def __init__(self, options: ActOptions) -> None:
        if not 400 <= options.status < 500:
            raise ValueError(f"status: {options.status} is not a 4xx")
        self.options = options
        self.header = options.header.encode()

    async def __call__(self, ctx: RequestContext) -> None:
        act = request_header(ctx, self.header)
        if act == "reject":
            raise Reject(
                "Refused by the probe plugin",
                status=self.options.status,
                code=self.options.code,
                type="permission_error",
            )
        if act == "raise":
            raise RuntimeError("the probe plugin broke")
        if act == "hang":
            await asyncio.sleep(3600)
        if act == "header":
            ctx.headers["x-probe-added"] = "yes"
        if act == "rewrite":
            rewrite(ctx.body, request_header(ctx, b"x-probe-arg") or "rewritten")


def rewrite(body: dict[str, Any], text: str) -> None:
    """The prompt becomes ``text``: the last message's content, or the input."""
    if "messages" in body:
        body["messages"][-1]["content"] = text
    else:
        body["input"] = text


def stamp(options: dict[str, Any]) -> Callable[[RequestContext], None]:
    value = str(options.get("value", "stamped"))

    def stage(ctx: RequestContext) -> None:
        ctx.headers["x-probe-stamp"] = value

    return stage


def misuse(options: dict[str, Any]) -> Callable[[RequestContext], None]:
    """A stage that rejects with a status that is not a 4xx (a plugin bug)."""

    def stage(ctx: RequestContext) -> None:
        raise Reject("not a refusal", status=200)

    return stage


class Explodes:
    def __init__(self, options: dict[str, Any]) -> None:
        raise RuntimeError("cannot start")
