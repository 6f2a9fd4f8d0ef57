"""The plugin contract: an operator's own stage, inserted into the pipeline by the config.

```yaml
plugins:
  - use: mypkg.guards:BlockPII        # module:attribute, importable by the gateway
    at: before_cache                  # before_<stage> or after_<stage>
    options: {words: [secret]}        # given to the plugin's constructor
    timeout: 2                        # seconds (default 5)
```

``use`` names a class (or any callable) that is called with the ``options`` mapping
(or, when it declares ``Options``, a msgspec Struct converted from it: a bad option
stops the gateway with one line naming it; so does a constructor raising
``ValueError``/``TypeError``, or anything else). It is called when the config is
checked and again in each worker, so a constructor should only validate and
precompute (open connections on first use). What it returns is the stage: called
as ``stage(ctx)`` for every request of every endpoint (``ctx.endpoint.name``:
chat, embeddings, messages, count_tokens), with the typed ``RequestContext``
(``pipeline/context.py``). It may be a coroutine function. It may

* reject the request: raise ``Reject(message, status=4xx, code=..., type=...,
  param=..., headers=...)`` (or any ``GatewayError``): the client gets that status
  in the endpoint's error shape (OpenAI's; Anthropic's on ``/v1/messages``);
* add response headers: ``ctx.headers["x-..."] = "..."`` (they go out on errors
  too; one HTTP cannot carry, such as a CR, LF or a character past latin-1, is
  dropped and fails the plugin);
* rewrite the request: change ``ctx.body`` (the dict that is forwarded) before
  ``route``. Before ``cache`` the change is part of the cache key; after it, not.

Positions: ``before_<stage>`` and ``after_<stage>`` for each stage of
``pipeline/run.py`` except ``after_respond`` (the reply is made there). A stage
that answers ends the list: on a cache HIT nothing after ``cache`` runs. Stages
run in the order of the list; two plugins at one position run in config order.

A plugin that raises anything else, or outlives its ``timeout``, ends the request
with a 500 in the endpoint's shape and one error log line naming the plugin; the
gateway stays up. The timeout can only interrupt a coroutine at an ``await``: a
plain function runs on the event loop to its end, so it must be quick.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.errors import GatewayError
from gateway.pipeline.run import StageFailed

if TYPE_CHECKING:
    from gateway.config import PluginSpec
    from gateway.pipeline.context import RequestContext
    from gateway.pipeline.reply import Reply

__all__ = ["PluginStage", "Reject", "load", "load_all"]


class Reject(GatewayError):
    """A plugin's refusal: a 4xx of its choosing (400 ``invalid_request_error`` by default)."""

    status = 400
    type = "invalid_request_error"
    code = "rejected_by_policy"

    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        if not 400 <= self.status <= 499:  # a plugin bug: the request ends in a 500
            raise ValueError(f"Reject takes a 4xx status, not {self.status}")


class PluginError(ValueError):
    """A plugin that cannot be loaded; ``str()`` is one line naming what is wrong."""


def _line(exc: BaseException) -> str:
    """An exception's message as one short line."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


def _why(exc: BaseException) -> str:
    line = _line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _resolve(use: str) -> Any:
    module_name, _, attr = use.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised on import
        raise PluginError(f"cannot import {module_name!r} ({_why(exc)})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PluginError(f"{module_name!r} has no attribute {attr!r}") from None


def load(spec: PluginSpec) -> Callable[[RequestContext], Any]:
    """The plugin's stage callable, built from its options (``PluginError`` if it cannot)."""
    factory = _resolve(spec.use)
    if not callable(factory):
        raise PluginError(
            f"{spec.use} is not callable (a class or a function that makes the stage)"
        )
    options: Any = spec.options
    schema = getattr(factory, "Options", None)
    if isinstance(schema, type) and issubclass(schema, msgspec.Struct):
        try:
            options = msgspec.convert(spec.options, schema)
        except msgspec.ValidationError as exc:
            raise PluginError(f"options: {exc}") from None
    try:
        stage = factory(options)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"options rejected: {_line(exc) or _why(exc)}") from None
    except Exception as exc:
        raise PluginError(f"cannot be built ({_why(exc)})") from None
    if not callable(stage):
        raise PluginError(f"{spec.use} did not make a callable stage")
    return stage  # type: ignore[no-any-return]


class PluginStage:
    """A loaded plugin as a pipeline stage."""

    def __init__(self, spec: PluginSpec, fn: Callable[[RequestContext], Any]) -> None:
        self.name = spec.use
        self.at = spec.at
        self.timeout = spec.timeout
        self.fn = fn

    async def __call__(self, ctx: RequestContext) -> Reply | None:
        try:
            async with asyncio.timeout(self.timeout):
                result = self.fn(ctx)
                if inspect.isawaitable(result):
                    await result
        except GatewayError as err:
            self._check_headers(ctx.headers, err.headers)
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # TimeoutError included: the plugin did not finish
            _drop_bad_headers(ctx.headers)
            raise StageFailed(self.name, exc) from exc
        self._check_headers(ctx.headers)
        return None

    def _check_headers(self, *groups: dict[str, str]) -> None:
        """Headers the plugin set that HTTP cannot carry (a CR or LF, a character past
        latin-1, a name that is not a token) would fail the answer as it is sent: they
        are dropped, and the plugin is failed for them here, by name."""
        bad = [name for headers in groups for name in _drop_bad_headers(headers)]
        if bad:
            error = ValueError(f"set a response header that is not valid HTTP: {bad[0][:40]!r}")
            raise StageFailed(self.name, error)


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def _drop_bad_headers(headers: dict[str, str]) -> list[str]:
    bad = [
        name
        for name, value in headers.items()
        if not (
            isinstance(name, str)
            and isinstance(value, str)
            and _TOKEN.fullmatch(name)
            and _FIELD_VALUE.fullmatch(value)
        )
    ]
    for name in bad:
        del headers[name]
    return [str(name) for name in bad]


def load_all(specs: list[PluginSpec]) -> list[tuple[str, PluginStage]]:
    return [(spec.at, PluginStage(spec, load(spec))) for spec in specs]
