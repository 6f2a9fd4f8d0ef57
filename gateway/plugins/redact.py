"""The shipped plugin: redact (or block) prompt content that matches regular expressions.

```yaml
plugins:
  - use: gateway.plugins.redact:Redact
    at: before_cache          # after auth, before the cache key and the upstream see the body
    options:
      action: redact          # redact (default) | block
      builtin: [email, credit_card, us_ssn, api_key, aws_access_key, bearer_token]
      patterns:               # your own, by name: {name: regex}
        project_name: '(?i)\\bproject\\s+falcon\\b'
      replacement: "[REDACTED:{name}]"      # {name}: the pattern's name
      endpoints: [chat, embeddings, messages, count_tokens]
      fields: [system, user, assistant, tool, input]
```

``redact`` replaces every match in ``ctx.body`` (the dict that is forwarded) and
answers ``x-gateway-redactions: <count>``; ``block`` refuses a request with any
match: a 400 ``content_blocked`` naming the pattern and where it matched
(``messages[2].content``), never the matched text. Both count in
``gateway_redactions_total{action, pattern}``, whose ``pattern`` label is a name
the operator wrote in the config (bounded); matched text is never a label, a
log field or part of an error.

Where prompt text lives, per endpoint, and the ``fields`` option that selects it:

=============  =====================================================================
chat           ``messages[].content``: a string or the ``text`` of its text parts;
               the role says the field: ``system``/``developer`` -> system,
               ``user``, ``assistant``, ``tool``/``function`` -> tool
messages,      ``system`` (a string or text blocks) -> system; ``messages[].content``
count_tokens   (a string, text blocks) -> user / assistant; the ``content`` of
               ``tool_result`` blocks (a string or text blocks) -> tool
embeddings     ``input``: a string or a list of strings -> input
=============  =====================================================================

Everything else (model, tools and tool-call arguments, images, documents,
thinking blocks, which carry signatures) is left alone. An endpoint the plugin
does not know yet is walked for all three shapes.

**Patterns** (``plugins/patterns.py``). The built-in ones are tuned against
false positives: card numbers (13-19 digits, together or in printed groups) must
pass the Luhn check, IBANs their country's length and the mod-97 check, SSNs
exclude the never-issued areas, keys and bearer tokens must contain a digit;
``phone``, ``ipv4`` and ``iban`` are off unless listed. All enabled patterns are
compiled into one regex at start-up, so each text is searched once (with the
built-in ones, roughly 50-100 ms per MB of text on one core; a custom pattern
that does not start with a plain character slows every position a little).
Custom patterns are Python regexes; a leading ``(?i)`` (or other global flags)
applies to that pattern alone.
A pattern that does not compile, matches the empty string, uses backreferences or
named groups, or a ``replacement`` that would itself match a pattern, stops
start-up with one line naming it. When a replacement joins text into a new match,
the text is searched again (a few times at most; then the request is refused
rather than forwarded with a match in it).

**Cost.** The plugin runs on the event loop, like every stage: a request's text
is scanned in one go (bounded by ``GATEWAY_MAX_BODY_BYTES``), so its ``timeout``
cannot cut a scan short.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from gateway.plugins.base import Reject
from gateway.plugins.patterns import BUILTINS, DEFAULT_BUILTINS, Redactor, custom
from gateway.telemetry import metrics

if TYPE_CHECKING:
    from gateway.pipeline.context import RequestContext
    from gateway.plugins.patterns import Pattern

__all__ = ["Redact", "RedactOptions", "build"]

# -- options ------------------------------------------------------------------------------

BuiltinName = Literal[
    "api_key",
    "aws_access_key",
    "bearer_token",
    "email",
    "us_ssn",
    "credit_card",
    "iban",
    "ipv4",
    "phone",
]
PatternName = Annotated[str, Meta(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,39}$")]
EndpointName = Literal["chat", "embeddings", "messages", "count_tokens"]
Field = Literal["system", "user", "assistant", "tool", "input"]
ENDPOINTS: tuple[EndpointName, ...] = ("chat", "embeddings", "messages", "count_tokens")
FIELDS: tuple[Field, ...] = ("system", "user", "assistant", "tool", "input")


class RedactOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    action: Literal["redact", "block"] = "redact"
    builtin: tuple[BuiltinName, ...] = DEFAULT_BUILTINS  # type: ignore[assignment]
    patterns: dict[PatternName, Annotated[str, Meta(min_length=1, max_length=4096)]] = {}
    replacement: Annotated[str, Meta(max_length=200)] = "[REDACTED:{name}]"
    endpoints: tuple[EndpointName, ...] = ENDPOINTS
    fields: tuple[Field, ...] = FIELDS
    header: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")] | None = (
        "x-gateway-redactions"
    )


def build(options: RedactOptions) -> Redactor:
    """The options' patterns, built-in ones first (``ValueError`` naming what is wrong)."""
    names = set(options.builtin)
    clash = names & set(options.patterns)
    if clash:
        raise ValueError(f"patterns.{sorted(clash)[0]}: the name of a built-in pattern")
    chosen: list[Pattern] = [
        (name, alts, check) for name, (alts, check) in BUILTINS.items() if name in names
    ]
    chosen += [custom(name, src) for name, src in options.patterns.items()]
    if not chosen:
        raise ValueError("no patterns: enable a builtin or add patterns")
    try:
        return Redactor(chosen, options.replacement)
    except re.error as exc:  # pragma: no cover - each one compiled alone already
        raise ValueError(f"patterns: cannot be combined ({exc.msg})") from None


# -- where prompt text lives --------------------------------------------------------------

# A place holding one text: holder[key] is the str; path is for error messages.
Slot = tuple[Any, Any, tuple[Any, ...]]
_CHAT_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}
_ANTHROPIC_ROLES = {"user": "user", "assistant": "assistant"}


def _text(holder: Any, key: Any, path: tuple[Any, ...]) -> Iterator[Slot]:
    """A string, or the ``text`` of every text part in a list (OpenAI parts and
    Anthropic blocks alike)."""
    value = holder[key]
    if isinstance(value, str):
        yield holder, key, path
    elif isinstance(value, list):
        for j, part in enumerate(value):
            if (
                isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            ):
                yield part, "text", (*path, j, "text")


def _messages(
    body: dict[str, Any], fields: frozenset[str], roles: dict[str, str]
) -> Iterator[Slot]:
    """``messages[].content``: a string, text parts or blocks (the message's role says
    the field), and the ``content`` of ``tool_result`` blocks (field ``tool``)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "content" not in m:
            continue
        role = m.get("role")
        field = roles.get(role, "user") if isinstance(role, str) else "user"
        content = m["content"]
        path = ("messages", i, "content")
        if isinstance(content, str):
            if field in fields:
                yield m, "content", path
        elif isinstance(content, list):
            for j, block in enumerate(content):
                if not isinstance(block, dict):
                    continue
                kind = block.get("type")
                if kind == "text" and field in fields and isinstance(block.get("text"), str):
                    yield block, "text", (*path, j, "text")
                elif kind == "tool_result" and "tool" in fields and "content" in block:
                    yield from _text(block, "content", (*path, j, "content"))


def _system(body: dict[str, Any], fields: frozenset[str]) -> Iterator[Slot]:
    if "system" in fields and "system" in body:
        yield from _text(body, "system", ("system",))


def chat_slots(body: dict[str, Any], fields: frozenset[str]) -> Iterator[Slot]:
    return _messages(body, fields, _CHAT_ROLES)


def anthropic_slots(body: dict[str, Any], fields: frozenset[str]) -> Iterator[Slot]:
    yield from _system(body, fields)
    yield from _messages(body, fields, _ANTHROPIC_ROLES)


def embeddings_slots(body: dict[str, Any], fields: frozenset[str]) -> Iterator[Slot]:
    if "input" not in fields:
        return
    value = body.get("input")
    if isinstance(value, str):
        yield body, "input", ("input",)
    elif isinstance(value, list):
        for j, item in enumerate(value):
            if isinstance(item, str):
                yield value, j, ("input", j)


def any_slots(body: dict[str, Any], fields: frozenset[str]) -> Iterator[Slot]:
    """An endpoint this module does not know: every shape it does know."""
    yield from _system(body, fields)
    yield from _messages(body, fields, _CHAT_ROLES)
    yield from embeddings_slots(body, fields)


WALKERS: dict[str, Callable[[dict[str, Any], frozenset[str]], Iterator[Slot]]] = {
    "chat": chat_slots,
    "embeddings": embeddings_slots,
    "messages": anthropic_slots,
    "count_tokens": anthropic_slots,
}


def where(path: tuple[Any, ...]) -> str:
    """``("messages", 0, "content")`` -> ``messages[0].content``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# -- the stage ----------------------------------------------------------------------------


class Redact:
    """The plugin: ``use: gateway.plugins.redact:Redact``."""

    Options: ClassVar[type[RedactOptions]] = RedactOptions

    def __init__(self, options: RedactOptions) -> None:
        self.options = options
        self.redactor = build(options)
        self.block = options.action == "block"
        self.fields = frozenset(options.fields)
        self.endpoints = frozenset(options.endpoints)
        self.header = options.header
        # Series exist from start-up; the labels are the config's names (bounded).
        counter = metrics.gateway_redactions_total
        self._counted = [counter.labels(options.action, name) for name in self.redactor.names]

    def __call__(self, ctx: RequestContext) -> None:
        endpoint = ctx.endpoint.name if ctx.endpoint is not None else ""
        walk = WALKERS.get(endpoint, any_slots)
        if endpoint in WALKERS and endpoint not in self.endpoints:
            return
        slots = walk(ctx.body, self.fields)
        if self.block:
            self._block(slots)
            return
        counts = [0] * len(self.redactor.names)
        for holder, key, path in slots:
            text = self.redactor.redact(holder[key], counts)
            if text is None:
                at = where(path)
                raise Reject(
                    f"The request was refused: the content at {at} could not be redacted.",
                    param=at,
                    code="content_blocked",
                )
            holder[key] = text
        total = 0
        for i, n in enumerate(counts):
            if n:
                self._counted[i].inc(n)
                total += n
        if self.header is not None:
            ctx.headers[self.header] = str(total)

    def _block(self, slots: Iterator[Slot]) -> None:
        for holder, key, path in slots:
            hit = self.redactor.find(holder[key])
            if hit is not None:
                name = self.redactor.names[hit[2]]
                self._counted[hit[2]].inc()
                at = where(path)
                raise Reject(
                    f"The request was blocked by the content policy: {at} matches "
                    f"the pattern {name!r}.",
                    param=at,
                    code="content_blocked",
                )
